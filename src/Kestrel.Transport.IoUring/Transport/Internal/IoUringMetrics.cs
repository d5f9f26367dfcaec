using System.Diagnostics.Metrics;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// Counters of one reactor kept by the transport layer. Written by the reactor thread alone (plain
/// increments; 64-bit reads are atomic on the 64-bit platforms io_uring runs on), read by metrics; the
/// fields marked Interlocked are also written by other threads.
/// </summary>
internal sealed class ReactorStats
{
    public long BytesReceived;
    public long BytesSent;
    public long ConnectionsAccepted;
    public long BufferExhaustions;
    public long ActiveConnections; // Interlocked: a connection can close off the reactor during stop
    public long DirectSends;       // Interlocked: send(2) calls on flushing threads that took the whole buffer
    public long DirectBytesSent;   // Interlocked: the bytes those sent (not in BytesSent)

    // What the options chose, counted so tests can see it (reactor thread only; not published as metrics).
    public long AcceptSubmissions;     // IORING_OP_ACCEPT SQEs (multishot or single-shot)
    public long PeerNameLookups;       // getpeername calls (none when the accept reported the address)
    public long ReceiveSubmissions;    // IORING_OP_RECV SQEs
    public long ProvidedBufferReceives; // receive completions that consumed a provided buffer
    public long PipeReceives;          // receive completions that wrote into input pipe memory
}

/// <summary>
/// The transport's instruments on the meter <see cref="MeterName"/>, following OpenTelemetry naming.
/// All are observable: the hot path only bumps plain per-reactor fields, collection reads them.
/// Per-reactor instruments carry the tag <c>iouring.reactor</c>.
/// </summary>
internal sealed class IoUringMetrics : IDisposable
{
    public const string MeterName = "Kestrel.Transport.IoUring";
    public const string ReactorTag = "iouring.reactor";

    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private long _fallbacks;
    private ReactorGroup? _reactors;

    public IoUringMetrics(IMeterFactory? meterFactory)
    {
        if (meterFactory is not null)
        {
            _meter = meterFactory.Create(MeterName);
        }
        else
        {
            _meter = new Meter(MeterName);
            _ownsMeter = true;
        }

        _meter.CreateObservableUpDownCounter("iouring.transport.active_connections", () => PerReactor(static (r, s) => s.ActiveConnections), "{connection}", "Connections open on each reactor.");
        _meter.CreateObservableCounter("iouring.transport.accepted_connections", () => PerReactor(static (r, s) => s.ConnectionsAccepted), "{connection}", "Connections accepted by each reactor.");
        _meter.CreateObservableCounter("iouring.transport.received_bytes", () => PerReactor(static (r, s) => s.BytesReceived), "By", "Bytes received from the network.");
        _meter.CreateObservableCounter("iouring.transport.sent_bytes", () => PerReactor(static (r, s) => s.BytesSent + Volatile.Read(ref s.DirectBytesSent)), "By", "Bytes sent to the network.");
        _meter.CreateObservableCounter("iouring.ring.enter_calls", () => PerReactor(static (r, s) => r.EnterCalls), "{call}", "io_uring_enter system calls made.");
        _meter.CreateObservableCounter("iouring.ring.submissions", () => PerReactor(static (r, s) => r.Submissions), "{sqe}", "Submission queue entries issued.");
        _meter.CreateObservableCounter("iouring.ring.completions", () => PerReactor(static (r, s) => r.Completions), "{cqe}", "Completion queue entries reaped.");
        _meter.CreateObservableCounter("iouring.ring.cq_overflows", () => PerReactor(static (r, s) => r.CqOverflows), "{event}", "Times completions overflowed the completion queue and were flushed from the kernel's overflow list.");
        _meter.CreateObservableCounter("iouring.ring.buffer_exhaustions", () => PerReactor(static (r, s) => s.BufferExhaustions), "{event}", "Times a receive found the provided buffer ring empty (ENOBUFS).");
        _meter.CreateObservableCounter("iouring.transport.fallbacks", () => Volatile.Read(ref _fallbacks), "{fallback}", "Times io_uring was unavailable and the Sockets transport served instead.");
    }

    public Meter Meter => _meter;

    public void Attach(ReactorGroup reactors) => _reactors = reactors;

    public void Detach() => _reactors = null;

    public void OnFallback() => Interlocked.Increment(ref _fallbacks);

    private IEnumerable<Measurement<long>> PerReactor(Func<Ring.Reactor, ReactorStats, long> read)
    {
        ReactorGroup? reactors = _reactors;
        if (reactors is null)
        {
            yield break;
        }

        for (int i = 0; i < reactors.Count; i++)
        {
            yield return new Measurement<long>(read(reactors[i], reactors.StatsFor(i)), new KeyValuePair<string, object?>(ReactorTag, i));
        }
    }

    public void Dispose()
    {
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }
}
