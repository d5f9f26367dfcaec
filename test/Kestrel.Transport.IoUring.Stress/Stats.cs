using System.Collections.Concurrent;
using System.Text;

namespace Kestrel.Transport.IoUring.Stress;

/// <summary>Counters of one run, updated from every connection task.</summary>
internal sealed class Stats
{
    private const int MaxErrorsKept = 30;
    private readonly ConcurrentDictionary<string, long> _faults = new();
    private readonly ConcurrentQueue<string> _errors = new();
    private long _errorCount;

    public long ConnectionsOpened;
    public long ConnectionsCompleted;
    public long Active;
    public long PeakActive;
    public long BytesSent;
    public long BytesVerified;
    public long RequestsVerified;

    public long ErrorCount => Interlocked.Read(ref _errorCount);

    public IReadOnlyDictionary<string, long> Faults => _faults;

    public IEnumerable<string> Errors => _errors;

    public void Fault(string kind, long count = 1) => _faults.AddOrUpdate(kind, count, (_, n) => n + count);

    public void Error(string message)
    {
        if (Interlocked.Increment(ref _errorCount) <= MaxErrorsKept)
        {
            _errors.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} {message}");
        }
    }

    public void Opened()
    {
        Interlocked.Increment(ref ConnectionsOpened);
        long active = Interlocked.Increment(ref Active);
        long peak = Interlocked.Read(ref PeakActive);
        while (active > peak)
        {
            long seen = Interlocked.CompareExchange(ref PeakActive, active, peak);
            if (seen == peak)
            {
                break;
            }

            peak = seen;
        }
    }

    public void Closed(bool completed)
    {
        Interlocked.Decrement(ref Active);
        if (completed)
        {
            Interlocked.Increment(ref ConnectionsCompleted);
        }
    }

    public string FaultsText()
    {
        if (_faults.IsEmpty)
        {
            return "none";
        }

        var text = new StringBuilder();
        foreach ((string kind, long count) in _faults.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            text.Append(text.Length == 0 ? "" : ", ").Append(kind).Append('=').Append(count);
        }

        return text.ToString();
    }
}
