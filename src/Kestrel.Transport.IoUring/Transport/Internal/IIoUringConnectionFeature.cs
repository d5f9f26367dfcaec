using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// Marks a connection served by this transport and gives the transport's own middleware (the file
/// sender) the reactor that owns it. Reachable from requests through HttpContext.Features, which falls
/// back to connection features; absent on Sockets connections.
/// </summary>
internal interface IIoUringConnectionFeature
{
    /// <summary>The reactor that owns this connection's socket; file reads for it go through this ring.</summary>
    Reactor Reactor { get; }

    /// <summary>Where application continuations of this connection run (thread pool, or inline on the reactor).</summary>
    System.IO.Pipelines.PipeScheduler ApplicationScheduler { get; }

    /// <summary>
    /// The file sender's wrapper of the last request's response body feature: Kestrel reuses one body
    /// feature per HTTP/1.1 connection, so the wrapper is made once per connection, not per request.
    /// </summary>
    object? ResponseBodyFeatureCache { get; set; }

    /// <summary>True while the pipe Kestrel writes to is still this connection's own (no connection middleware, such as TLS, replaced it).</summary>
    bool OwnsTransport { get; }

    /// <summary>
    /// Places a region of <paramref name="file"/> after the output written so far and counts what is
    /// advanced through Transport.Output into it (instead of bytes) until <see cref="EndFileRegion"/>.
    /// On success the region owns <paramref name="file"/>; null when no pipe is available or the
    /// connection's output has ended (the caller still owns the file).
    /// </summary>
    FileRegion? TryBeginFileRegion(Microsoft.Win32.SafeHandles.SafeFileHandle file, long offset, long length);

    /// <summary>Output advanced from now on is bytes again.</summary>
    void EndFileRegion(FileRegion region);

    /// <summary>The bytes counted into the region are not the bytes the application advanced: nothing more may be sent; the connection is reset.</summary>
    void FailFileRegion(FileRegion region, string reason);
}
