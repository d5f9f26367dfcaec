using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// What all acceptors of one transport share about descriptors: the reserve, and the rule that when one
/// of them runs out, all of them stop. One acceptor backing off while another (another reactor's
/// SO_REUSEPORT socket, another endpoint) keeps accepting would hand the released reserve straight to
/// new connections and leave the process at its limit again.
/// </summary>
internal sealed class AcceptGate : IDisposable
{
    private readonly DescriptorReserve _reserve = new();
    private readonly Lock _lock = new();
    private readonly List<Acceptor> _acceptors = [];

    public void Add(Acceptor acceptor)
    {
        lock (_lock)
        {
            _acceptors.Add(acceptor);
        }
    }

    public void Remove(Acceptor acceptor)
    {
        lock (_lock)
        {
            _acceptors.Remove(acceptor);
        }
    }

    /// <summary>An accept failed for lack of descriptors: free the reserve and make every acceptor back off.</summary>
    public void OnExhausted(Acceptor reporter)
    {
        _reserve.Release();
        Acceptor[] others;
        lock (_lock)
        {
            others = [.. _acceptors];
        }

        foreach (Acceptor acceptor in others)
        {
            if (acceptor != reporter)
            {
                acceptor.BackOffFromAnyThread();
            }
        }
    }

    /// <summary>True when accepting may resume: the whole reserve could be taken back.</summary>
    public bool TryResume() => _reserve.TryRefill();

    public void Dispose() => _reserve.Dispose();
}
