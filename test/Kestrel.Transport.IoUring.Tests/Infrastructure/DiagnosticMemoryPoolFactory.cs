using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>
/// Replaces Kestrel's pinned block pool for one test host. Like Kestrel's pool it hands out pinned
/// 4096-byte blocks and refuses larger rentals; unlike it, it counts every block rented and returned
/// (over all pools it created) so a test can assert that the transport gave every block back.
/// </summary>
public sealed class DiagnosticMemoryPoolFactory : IMemoryPoolFactory<byte>
{
    public const int BlockSize = 4096;

    private readonly ConcurrentBag<byte[]> _free = [];
    private long _rented;
    private long _returned;
    private long _doubleReturns;
    private long _peakOutstanding;

    public long Rented => Interlocked.Read(ref _rented);

    public long Returned => Interlocked.Read(ref _returned);

    /// <summary>Blocks rented and not yet returned, right now.</summary>
    public long Outstanding => Rented - Returned;

    /// <summary>The most blocks ever outstanding at once.</summary>
    public long PeakOutstanding => Interlocked.Read(ref _peakOutstanding);

    /// <summary>Blocks disposed more than once: always a bug in whoever owned them.</summary>
    public long DoubleReturns => Interlocked.Read(ref _doubleReturns);

    public MemoryPool<byte> Create(MemoryPoolOptions? options = null) => new Pool(this);

    /// <summary>Waits (bounded) until every rented block is back; true when they all are.</summary>
    public async Task<bool> WhenAllBlocksReturnedAsync(TimeSpan timeout)
    {
        DateTime deadline = DateTime.UtcNow + timeout;
        while (Outstanding != 0)
        {
            if (DateTime.UtcNow >= deadline)
            {
                return false;
            }

            await Task.Delay(50);
        }

        return true;
    }

    private byte[] RentArray()
    {
        long outstanding = Interlocked.Increment(ref _rented) - Interlocked.Read(ref _returned);
        long peak = Interlocked.Read(ref _peakOutstanding);
        while (outstanding > peak)
        {
            long seen = Interlocked.CompareExchange(ref _peakOutstanding, outstanding, peak);
            if (seen == peak)
            {
                break;
            }

            peak = seen;
        }

        return _free.TryTake(out byte[]? array) ? array : GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);
    }

    private void ReturnArray(byte[] array)
    {
        Interlocked.Increment(ref _returned);
        _free.Add(array);
    }

    private sealed class Pool(DiagnosticMemoryPoolFactory factory) : MemoryPool<byte>
    {
        private volatile bool _disposed;

        public override int MaxBufferSize => BlockSize;

        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThan(minBufferSize, BlockSize);
            ObjectDisposedException.ThrowIf(_disposed, this);
            return new Block(factory, factory.RentArray());
        }

        protected override void Dispose(bool disposing) => _disposed = true;
    }

    private sealed class Block(DiagnosticMemoryPoolFactory factory, byte[] array) : IMemoryOwner<byte>
    {
        private int _disposed;

        public Memory<byte> Memory => array;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                Interlocked.Increment(ref factory._doubleReturns);
                return;
            }

            factory.ReturnArray(array);
        }
    }
}
