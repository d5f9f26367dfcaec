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
}
