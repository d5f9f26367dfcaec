namespace Kestrel.Transport.IoUring;

/// <summary>
/// Options for the io_uring transport, in the style of Kestrel's <c>SocketTransportOptions</c>.
/// </summary>
public sealed class IoUringTransportOptions
{
    /// <summary>
    /// The number of reactors: threads that each own one io_uring and serve their own connections.
    /// </summary>
    /// <remarks>Defaults to the number of CPUs this process may run on (<see cref="Environment.ProcessorCount"/>, which honours affinity and cgroup limits).</remarks>
    public int ReactorCount { get; set; } = Environment.ProcessorCount;

    /// <summary>
    /// The maximum length of the pending connection queue of each listen socket.
    /// </summary>
    /// <remarks>Defaults to 512.</remarks>
    public int Backlog { get; set; } = 512;

    /// <summary>
    /// Set to false to enable Nagle's algorithm for all accepted TCP connections.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool NoDelay { get; set; } = true;

    /// <summary>
    /// The maximum bytes a connection buffers from the network before the transport stops receiving
    /// until the application has read some. Null or 0 means unlimited.
    /// </summary>
    /// <remarks>Defaults to 1 MiB.</remarks>
    public long? MaxReadBufferSize { get; set; } = 1024 * 1024;

    /// <summary>
    /// The maximum bytes the application may have written and not yet sent before its writes wait.
    /// Null or 0 means unlimited, which defeats Kestrel's MinResponseDataRate protection.
    /// </summary>
    /// <remarks>Defaults to 64 KiB.</remarks>
    public long? MaxWriteBufferSize { get; set; } = 64 * 1024;

    /// <summary>
    /// TCP_NOTSENT_LOWAT on accepted TCP connections: the most bytes a connection's kernel send queue
    /// holds beyond what the peer's receive window admits. The rest of a large response (a static
    /// file, a big body) waits in the transport instead, and goes out from the server's own thread
    /// when the window opens, rather than being transmitted later inside the peer's acknowledgements:
    /// on loopback that work otherwise lands on the client's CPU. It also keeps a slow reader from
    /// holding megabytes of kernel memory. Null leaves the system's setting
    /// (net.ipv4.tcp_notsent_lowat, unlimited by default).
    /// </summary>
    /// <remarks>Defaults to 64 KiB.</remarks>
    public int? NotSentLowWatermark { get; set; } = 64 * 1024;

    /// <summary>
    /// Runs Kestrel's request processing and the application's code inline on the reactor thread that
    /// received the data, instead of on the thread pool. This is the fastest mode, but any application
    /// code that blocks (synchronous I/O, locks, <c>Thread.Sleep</c>, <c>.Result</c>) stalls every other
    /// connection of that reactor until it returns.
    /// </summary>
    /// <remarks>Defaults to false. Only turn it on for code that never blocks.</remarks>
    public bool UnsafePreferInlineScheduling { get; set; }

    /// <summary>
    /// Submission queue entries of each reactor's ring (a power of two).
    /// </summary>
    /// <remarks>Defaults to 1024.</remarks>
    public int SubmissionQueueEntries { get; set; } = 1024;

    /// <summary>
    /// Completion queue entries of each reactor's ring. Multishot accept and receive make completions
    /// without submissions, so this is much larger than the submission queue.
    /// </summary>
    /// <remarks>Defaults to 16384.</remarks>
    public int CompletionQueueEntries { get; set; } = 16384;

    /// <summary>
    /// Receive buffers each reactor provides to the kernel (a power of two, at most 32768). Idle
    /// connections hold none: a buffer is taken only while data is copied out of it.
    /// </summary>
    /// <remarks>Defaults to 1024.</remarks>
    public int ReceiveBufferCount { get; set; } = 1024;

    /// <summary>
    /// The size in bytes of each provided receive buffer.
    /// </summary>
    /// <remarks>Defaults to 4096.</remarks>
    public int ReceiveBufferSize { get; set; } = 4096;

    /// <summary>
    /// Accepts connections with one multishot accept per listen socket, which stays armed across
    /// connections. Set to false for single-shot accepts: several stay in flight per listen socket, each
    /// re-armed after its completion and each given its own address buffer, so the kernel reports the
    /// peer's address with the connection and no getpeername call is needed.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool UseMultishotAccept { get; set; } = true;

    /// <summary>
    /// Receives with one multishot receive per connection, which stays armed while data arrives. Set to
    /// false for a single-shot receive re-armed after each completion. Only used when
    /// <see cref="UseProvidedBuffers"/> is true (a multishot receive needs provided buffers).
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool UseMultishotReceive { get; set; } = true;

    /// <summary>
    /// Receives into a ring of buffers each reactor provides to the kernel (see
    /// <see cref="ReceiveBufferCount"/> and <see cref="ReceiveBufferSize"/>), so idle connections hold no
    /// receive memory. Set to false to receive with a single-shot receive directly into the connection's
    /// input pipe memory: one copy less, but every connection then holds a pinned pool block while it
    /// waits for data, and <see cref="UseMultishotReceive"/> has no effect.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool UseProvidedBuffers { get; set; } = true;

    /// <summary>
    /// Lets a flush on a thread other than the reactor's send the response itself, with a non-blocking send(2),
    /// when the reactor is blocked waiting for completions and the thread pool has nothing else queued. Handing
    /// that one send to the reactor would cost an eventfd write and two context switches; this matters most with
    /// few connections. Whatever the socket does not take at once goes on through the ring. Set to false to send
    /// everything through the ring.
    /// </summary>
    /// <remarks>Defaults to true. Has no effect on flushes that run on the reactor (inline scheduling).</remarks>
    public bool UseDirectSend { get; set; } = true;

    /// <summary>
    /// Creates each ring with IORING_SETUP_SINGLE_ISSUER and IORING_SETUP_DEFER_TASKRUN where the kernel
    /// accepts them: completion work runs only when the reactor enters the kernel, never interrupting it.
    /// Set to false for a ring with IORING_SETUP_COOP_TASKRUN instead.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool UseDeferTaskRun { get; set; } = true;

    /// <summary>
    /// Registers each ring's file descriptor with the ring (IORING_REGISTER_RING_FDS) where the kernel
    /// allows it, so io_uring_enter skips the file table lookup. Set to false to enter with the plain fd.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool UseRegisteredRingFd { get; set; } = true;

    /// <summary>
    /// Serve every endpoint with Kestrel's Sockets transport instead, without probing io_uring.
    /// </summary>
    /// <remarks>Defaults to false.</remarks>
    public bool ForceSockets { get; set; }

    /// <summary>
    /// Throw at startup when io_uring is unavailable, instead of logging a warning and serving with the
    /// Sockets transport.
    /// </summary>
    /// <remarks>Defaults to false.</remarks>
    public bool ThrowIfUnavailable { get; set; }

    /// <summary>
    /// Sends files (StaticFiles, MapStaticAssets, Results.File, Response.SendFileAsync: everything that
    /// calls <c>IHttpResponseBodyFeature.SendFileAsync</c>) by reading them through the connection's ring
    /// instead of with blocking reads on the thread pool, and answers small unchanged files from
    /// memory (see <see cref="FileCacheMaxBytes"/>). UseIoUring installs it as the first middleware of
    /// the application; it does nothing on connections the Sockets transport serves. Response bytes
    /// and headers are the same as without it.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool UseRingFileSender { get; set; } = true;

    /// <summary>
    /// Lets the ring file sender send file bytes from the page cache to the socket without copying
    /// them through user space (IORING_OP_SPLICE through a pooled pipe), for cleartext HTTP/1.1
    /// responses with a Content-Length. Kestrel still counts every byte. It turns itself off for TLS,
    /// HTTP/2, connection middleware that replaces the transport, chunked or compressed responses,
    /// and small files the file cache serves; those are sent by reading the file through the ring.
    /// </summary>
    /// <remarks>Defaults to true. Only used when <see cref="UseRingFileSender"/> is true.</remarks>
    public bool UseZeroCopyFileSend { get; set; } = true;

    /// <summary>
    /// The most bytes of file contents the ring file sender keeps in memory, over all files. A file is
    /// served from memory only while its size, modification and status-change times, device and inode
    /// still match (one statx per request), so a changed file is never served stale. 0 turns the cache
    /// off.
    /// </summary>
    /// <remarks>Defaults to 32 MiB. Only used when <see cref="UseRingFileSender"/> is true.</remarks>
    public long FileCacheMaxBytes { get; set; } = 32 * 1024 * 1024;

    /// <summary>
    /// The largest file, in bytes, the ring file sender keeps in memory. 0 turns the cache off.
    /// </summary>
    /// <remarks>Defaults to 64 KiB.</remarks>
    public int FileCacheMaxFileSize { get; set; } = 64 * 1024;
}
