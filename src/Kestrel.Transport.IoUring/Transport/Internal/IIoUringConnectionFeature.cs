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
}
