using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

public sealed record LogRecord(long Sequence, string Category, LogLevel Level, EventId EventId, string Message, Exception? Exception)
{
    public override string ToString()
        => $"#{Sequence} {Level} [{Category}:{EventId.Id}{(EventId.Name is null ? "" : "/" + EventId.Name)}] {Message}{(Exception is null ? "" : Environment.NewLine + "    " + Exception)}";
}

/// <summary>Keeps every log record of one test host, at every level, in order.</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    private readonly ConcurrentQueue<LogRecord> _records = new();
    private long _sequence;

    public IReadOnlyCollection<LogRecord> Records => _records;

    /// <summary>The sequence number the next record will get; use it to look only at what came later.</summary>
    public long Mark() => Interlocked.Read(ref _sequence) + 1;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    public string Format(IEnumerable<LogRecord> records, int max = 200)
    {
        var text = new StringBuilder();
        int count = 0;
        foreach (LogRecord record in records)
        {
            if (++count > max)
            {
                text.AppendLine("    ...");
                break;
            }

            text.Append("    ").AppendLine(record.ToString());
        }

        return text.ToString();
    }

    private sealed class Logger(CapturingLoggerProvider provider, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            long sequence = Interlocked.Increment(ref provider._sequence);
            provider._records.Enqueue(new LogRecord(sequence, category, logLevel, eventId, formatter(state, exception), exception));
        }
    }
}
