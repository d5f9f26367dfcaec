using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// A provided buffer ring (IORING_REGISTER_PBUF_RING) over one slab of native memory allocated once.
/// The kernel picks a buffer when data arrives and names it (bid) in the completion; from then until
/// <see cref="Recycle"/> the buffer is ours. Recycled buffers become the kernel's again at the next
/// <see cref="Publish"/>, which the reactor calls once per loop turn. Owner thread only.
/// </summary>
internal sealed unsafe class ProvidedBufferRing : IDisposable
{
    private readonly IoUringRing _ring;
    private readonly io_uring_buf* _entries;  // ring of buffer descriptors, page aligned
    private readonly byte* _slab;             // Count * BufferSize bytes of payload
    private readonly uint _mask;
    private ushort _localTail;                // entries written but maybe not yet published
    private ushort _publishedTail;
    private bool _registered;
    private bool _disposed;

    public ushort GroupId { get; }
    public int Count { get; }
    public int BufferSize { get; }

    /// <summary>Buffers currently owned by the kernel (published and not yet consumed by a completion).</summary>
    public int KernelOwned { get; private set; }

    /// <summary>Buffers handed out by completions and not yet recycled.</summary>
    public int UserOwned { get; private set; }

    /// <summary>Times a receive found the ring empty (ENOBUFS).</summary>
    public long Exhaustions { get; set; }

    public ProvidedBufferRing(IoUringRing ring, ushort groupId, int count, int bufferSize)
    {
        if (count <= 0 || count > 32768 || (count & (count - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, "The buffer count must be a power of two between 1 and 32768.");
        }

        if (bufferSize <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bufferSize), bufferSize, "The buffer size must be positive.");
        }

        _ring = ring;
        GroupId = groupId;
        Count = count;
        BufferSize = bufferSize;
        _mask = (uint)count - 1;

        nuint ringBytes = (nuint)(count * sizeof(io_uring_buf));
        _entries = (io_uring_buf*)NativeBuffers.Allocate(ringBytes, (nuint)Environment.SystemPageSize, zero: true);
        _slab = (byte*)NativeBuffers.Allocate((nuint)count * (nuint)bufferSize, (nuint)Environment.SystemPageSize);

        io_uring_buf_reg reg = new() { ring_addr = (ulong)_entries, ring_entries = (uint)count, bgid = groupId };
        int ret = ring.Register(IORING_REGISTER_PBUF_RING, &reg, 1);
        if (ret < 0)
        {
            FreeMemory();
            throw new IoUringException("IORING_REGISTER_PBUF_RING", -ret);
        }

        _registered = true;
        for (int i = 0; i < count; i++)
        {
            Add((ushort)i);
        }

        Publish();
    }

    /// <summary>The payload of buffer <paramref name="bid"/>, as filled by a completion of <paramref name="length"/> bytes.</summary>
    public ReadOnlySpan<byte> GetData(ushort bid, int length)
    {
        if (bid >= Count || (uint)length > (uint)BufferSize)
        {
            throw new InvalidOperationException($"The kernel named buffer {bid} with {length} bytes, outside group {GroupId} ({Count} x {BufferSize}).");
        }

        return new ReadOnlySpan<byte>(_slab + (nint)bid * BufferSize, length);
    }

    /// <summary>Called for each completion that consumed a buffer: it is now ours until recycled.</summary>
    public void OnConsumed()
    {
        KernelOwned--;
        UserOwned++;
    }

    /// <summary>Gives buffer <paramref name="bid"/> back; the kernel sees it after the next <see cref="Publish"/>.</summary>
    public void Recycle(ushort bid)
    {
        UserOwned--;
        Add(bid);
    }

    private void Add(ushort bid)
    {
        io_uring_buf* entry = &_entries[_localTail & _mask];
        entry->addr = (ulong)(_slab + (nint)bid * BufferSize);
        entry->len = (uint)BufferSize;
        entry->bid = bid;
        _localTail++;
    }

    /// <summary>True when recycled buffers are waiting to be published.</summary>
    public bool HasUnpublished => _localTail != _publishedTail;

    /// <summary>Makes every recycled buffer visible to the kernel with one tail store.</summary>
    public void Publish()
    {
        if (_localTail == _publishedTail)
        {
            return;
        }

        // Release: the descriptor stores above must be visible before the tail that exposes them
        // (the kernel may read the ring from another context, e.g. io-wq).
        Volatile.Write(ref ((io_uring_buf_ring*)_entries)->tail, _localTail);
        KernelOwned += (ushort)(_localTail - _publishedTail); // the kernel's only from here on
        _publishedTail = _localTail;
    }

    private void FreeMemory()
    {
        NativeBuffers.Free(_entries, (nuint)(Count * sizeof(io_uring_buf)));
        NativeBuffers.Free(_slab, (nuint)Count * (nuint)BufferSize);
    }

    /// <summary>
    /// Unregisters the group and frees the slab. Only call once no receive that may select from this
    /// group is in flight: the reactor does so after its last completion.
    /// </summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_registered)
        {
            io_uring_buf_reg reg = new() { bgid = GroupId };
            _ring.Register(IORING_UNREGISTER_PBUF_RING, &reg, 1);
        }

        FreeMemory();
    }
}
