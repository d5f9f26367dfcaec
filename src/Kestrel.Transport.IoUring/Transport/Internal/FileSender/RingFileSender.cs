using System.Buffers;
using System.IO.Pipelines;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Ring;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;
using Microsoft.Win32.SafeHandles;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>Counters of the file sender (any thread; Interlocked).</summary>
internal sealed class FileSenderStats
{
    /// <summary>Sends served by reading the file through a ring.</summary>
    public long RingSends;

    /// <summary>IORING_OP_READs issued for those sends.</summary>
    public long RingReads;

    /// <summary>Sends served from the file cache (no read at all).</summary>
    public long CacheHits;

    /// <summary>Sends handed to Kestrel's own SendFileAsync (missing or non-regular files).</summary>
    public long Fallbacks;

    /// <summary>Sends whose file bytes went from the page cache to the socket by splice (no user-space copy).</summary>
    public long ZeroCopySends;

    /// <summary>File bytes counted through Kestrel's writer into zero-copy regions.</summary>
    public long ZeroCopyBytes;

    /// <summary>Zero-copy sends that found no pipe or an ended connection and read through the ring instead.</summary>
    public long ZeroCopyUnavailable;
}

/// <summary>
/// IHttpResponseBodyFeature.SendFileAsync for connections of this transport, with the semantics of
/// ASP.NET Core's SendFileFallback (argument checks, cancellation, a file that comes up short ends the
/// body early so Kestrel's Content-Length check aborts the connection), but reading through the
/// connection's reactor ring instead of blocking thread-pool reads, and answering small unchanged
/// files from memory. File bytes are read into buffers owned by a <see cref="RingFileReader"/>, never
/// into the response writer's memory, then copied into the writer.
/// </summary>
internal sealed class RingFileSender
{
    public const int ChunkSize = 64 * 1024;

    /// <summary>Bytes counted per GetMemory/Advance of a zero-copy send (the transport's scratch size).</summary>
    public const int ZeroCopyChunk = IoUringOutputWriter.ScratchSize;

    public RingFileSender(IoUringTransportOptions options)
    {
        ZeroCopy = options.UseZeroCopyFileSend && IoUringProbe.Current.SupportsOpcode(IoUringNative.IORING_OP_SPLICE);
        if (options.FileCacheMaxBytes > 0 && options.FileCacheMaxFileSize > 0)
        {
            Cache = new FileContentCache(options.FileCacheMaxBytes, options.FileCacheMaxFileSize);
        }
    }

    public FileContentCache? Cache { get; }

    /// <summary>Zero-copy sends are allowed (option on, and the kernel has IORING_OP_SPLICE).</summary>
    public bool ZeroCopy { get; }

    public FileSenderStats Stats { get; } = new();

    public async Task SendFileAsync(HttpContext context, IHttpResponseBodyFeature inner, IIoUringConnectionFeature connection, string path, long offset, long? count, CancellationToken cancellationToken)
    {
        if (!NativeFile.TryGetRegularFileIdentity(path, out FileIdentity identity))
        {
            // Missing, a directory, or unreadable metadata: exactly what Kestrel does today, exceptions included.
            Interlocked.Increment(ref Stats.Fallbacks);
            await inner.SendFileAsync(path, offset, count, cancellationToken).ConfigureAwait(false);
            return;
        }

        long fileLength = identity.Size;
        if (offset < 0 || offset > fileLength)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, string.Empty);
        }

        if (count.HasValue && (count.Value < 0 || count.Value > fileLength - offset))
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, string.Empty);
        }

        cancellationToken.ThrowIfCancellationRequested();
        long length = count ?? fileLength - offset;

        if (Cache is not null && Cache.TryGet(path, identity, out byte[]? content))
        {
            Interlocked.Increment(ref Stats.CacheHits);
            if (length == 0)
            {
                return;
            }

            await inner.StartAsync(cancellationToken).ConfigureAwait(false);
            PipeWriter writer = inner.Writer;
            writer.Write(content.AsSpan((int)offset, (int)length));
            await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        SafeFileHandle file = NativeFile.OpenRead(path);
        if (length == 0)
        {
            file.Dispose();
            return;
        }

        byte[]? fill = Cache is not null && offset == 0 && length == fileLength && Cache.MayStore(identity) ? new byte[length] : null;
        if (fill is null && ZeroCopy && ZeroCopyGatesHold(context, connection))
        {
            // The region owns the file once it is placed; until then (and if it cannot be) we do.
            FileRegion? region = null;
            try
            {
                await inner.StartAsync(cancellationToken).ConfigureAwait(false);

                // Headers (and anything written before) must be in the transport's pipe, and no flush
                // pending inside Kestrel's writer, so that its GetMemory/Advance reach the transport as they are.
                FlushResult flushed = await inner.Writer.FlushAsync(cancellationToken).ConfigureAwait(false);
                if (flushed.IsCompleted || flushed.IsCanceled)
                {
                    file.Dispose();
                    return;
                }

                region = connection.TryBeginFileRegion(file, offset, length);
            }
            finally
            {
                if (region is null && !file.IsClosed)
                {
                    file.Dispose();
                }
            }

            if (region is not null)
            {
                Interlocked.Increment(ref Stats.ZeroCopySends);
                await SendZeroCopyAsync(inner, connection, region, length, cancellationToken).ConfigureAwait(false);
                return;
            }

            Interlocked.Increment(ref Stats.ZeroCopyUnavailable);
            file = NativeFile.OpenRead(path);
        }

        Interlocked.Increment(ref Stats.RingSends);
        bool inline = ReferenceEquals(connection.ApplicationScheduler, PipeScheduler.Inline);
        int bufferSize = (int)Math.Min(ChunkSize, (length + 4095) & ~4095L);

        // The reader owns the file from here and closes it after its last read completed.
        RingFileReader reader = RingFileReader.Create(connection.Reactor, file, bufferSize, inline);
        long delivered;
        try
        {
            delivered = await SendAsync(inner, reader, path, offset, length, fill, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            reader.Release();
        }

        if (fill is not null && delivered == length
            && NativeFile.TryGetRegularFileIdentity(path, out FileIdentity after) && after == identity)
        {
            // Unchanged from before the first read to after the last: the bytes are this version's.
            Cache!.Store(path, identity, fill);
        }
    }

    /// <summary>
    /// The zero-copy path is used only where Kestrel's response writer passes GetMemory/Advance straight
    /// to this transport's output: cleartext (no TLS, no connection middleware replacing the transport)
    /// HTTP/1.1 with a Content-Length, not chunked, and a body that is actually written (not HEAD, 204
    /// or 304). Body wrappers (ResponseCompression) gate themselves: when they transform the body they
    /// never call this sender.
    /// </summary>
    private static bool ZeroCopyGatesHold(HttpContext context, IIoUringConnectionFeature connection)
    {
        HttpResponse response = context.Response;
        return connection.OwnsTransport
            && context.Features.Get<ITlsConnectionFeature>() is null
            && context.Features.Get<ITlsHandshakeFeature>() is null
            && HttpProtocol.IsHttp11(context.Request.Protocol)
            && !HttpMethods.IsHead(context.Request.Method)
            && response.StatusCode is not (StatusCodes.Status204NoContent or StatusCodes.Status304NotModified)
            && response.ContentLength.HasValue
            && !response.Headers.ContainsKey(HeaderNames.TransferEncoding);
    }

    /// <summary>
    /// Counts <paramref name="length"/> bytes through Kestrel's writer into <paramref name="region"/>
    /// without writing them (the transport splices them from the file), one chunk per flush. Each
    /// Advance must reach the region whole: if it did not, some layer buffered the never-written memory,
    /// so the connection is reset before anything more can be sent.
    /// </summary>
    private async Task SendZeroCopyAsync(IHttpResponseBodyFeature inner, IIoUringConnectionFeature connection, FileRegion region, long length, CancellationToken cancellationToken)
    {
        PipeWriter writer = inner.Writer;
        try
        {
            long sinceFlush = 0;
            for (long left = length; left > 0;)
            {
                int n = (int)Math.Min(left, ZeroCopyChunk);
                long before = region.Counted;
                _ = writer.GetMemory(n);
                writer.Advance(n);
                if (region.Counted != before + n)
                {
                    connection.FailFileRegion(region, "Response bytes counted for a zero-copy file send did not reach the transport.");
                    return;
                }

                left -= n;
                sinceFlush += n;
                Interlocked.Add(ref Stats.ZeroCopyBytes, n);
                if (left > 0 && sinceFlush < IoUringOutputWriter.Window)
                {
                    continue;
                }

                // Once per window (and at the end): the flush hands the counted bytes to the send loop
                // and waits while more than a window of them is unsent (backpressure).
                sinceFlush = 0;
                FlushResult flush = await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
                if (flush.IsCompleted || flush.IsCanceled)
                {
                    return;
                }

                cancellationToken.ThrowIfCancellationRequested();
            }
        }
        finally
        {
            connection.EndFileRegion(region);
        }
    }

    /// <summary>Streams [offset, offset+length) through two ring buffers; returns the bytes delivered (fewer if the file came up short or the response ended).</summary>
    private async Task<long> SendAsync(IHttpResponseBodyFeature inner, RingFileReader reader, string path, long offset, long length, byte[]? fill, CancellationToken cancellationToken)
    {
        PipeWriter writer = inner.Writer;
        int[] requested = new int[RingFileReader.BufferCount];
        long end = offset + length;
        long nextIssue = offset;
        long delivered = 0;
        int head = 0;        // buffer whose read completes next (reads complete for us in issue order)
        int tail = 0;        // buffer the next read goes into
        int outstanding = 0; // reads issued and not yet awaited
        bool started = false;

        void Refill()
        {
            while (outstanding < RingFileReader.BufferCount && nextIssue < end)
            {
                int n = (int)Math.Min(reader.BufferSize, end - nextIssue);
                reader.Issue(tail, nextIssue, n);
                requested[tail] = n;
                nextIssue += n;
                tail ^= 1;
                outstanding++;
            }
        }

        Refill();
        while (outstanding > 0)
        {
            int index = head;
            int result = await reader.WaitAsync(index).ConfigureAwait(false);
            head ^= 1;
            outstanding--;
            Interlocked.Increment(ref Stats.RingReads);
            if (result < 0)
            {
                throw new IOException($"Reading '{path}' through io_uring failed: {ErrnoText.Describe(-result)}");
            }

            if (result == 0)
            {
                // The file ended before the requested range (truncated since it was stat'ed). Like
                // SendFileFallback, end quietly: Kestrel sees fewer bytes than Content-Length and
                // aborts the connection; the client never gets wrong bytes.
                return delivered;
            }

            if (!started)
            {
                await inner.StartAsync(cancellationToken).ConfigureAwait(false);
                started = true;
            }

            ReadOnlySpan<byte> bytes = reader.Buffer(index, result);
            writer.Write(bytes);
            if (fill is not null)
            {
                bytes.CopyTo(fill.AsSpan((int)delivered));
            }

            delivered += result;
            if (result < requested[index])
            {
                // A short read means the file ends (or ended) here: the read already issued after it
                // asked for bytes at a later offset. Drop it and go on from where this one stopped.
                while (outstanding > 0)
                {
                    _ = await reader.WaitAsync(head).ConfigureAwait(false);
                    head ^= 1;
                    outstanding--;
                }

                nextIssue = offset + delivered;
            }

            // This buffer has been copied out: read the next chunk into it while the flush runs.
            Refill();
            FlushResult flush = await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
            if (flush.IsCompleted || flush.IsCanceled)
            {
                return delivered;
            }

            cancellationToken.ThrowIfCancellationRequested();
        }

        return delivered;
    }
}
