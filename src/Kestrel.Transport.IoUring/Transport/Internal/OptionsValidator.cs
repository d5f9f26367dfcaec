namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>Rejects invalid options at startup, saying which setting, what was given and what is allowed.</summary>
internal static class OptionsValidator
{
    public static void Validate(IoUringTransportOptions options)
    {
        Require(options.ReactorCount >= 1 && options.ReactorCount <= 1024, nameof(options.ReactorCount), options.ReactorCount, "between 1 and 1024");
        Require(options.Backlog >= 1, nameof(options.Backlog), options.Backlog, "at least 1");
        Require(options.MaxReadBufferSize is null or >= 0, nameof(options.MaxReadBufferSize), options.MaxReadBufferSize, "null, 0 (unlimited) or positive");
        Require(options.MaxWriteBufferSize is null or >= 0, nameof(options.MaxWriteBufferSize), options.MaxWriteBufferSize, "null, 0 (unlimited) or positive");
        Require(options.NotSentLowWatermark is null or > 0, nameof(options.NotSentLowWatermark), options.NotSentLowWatermark, "null (the system's setting) or positive");
        Require(IsPowerOfTwo(options.SubmissionQueueEntries) && options.SubmissionQueueEntries is >= 2 and <= 32768, nameof(options.SubmissionQueueEntries), options.SubmissionQueueEntries, "a power of two from 2 to 32768");
        Require(IsPowerOfTwo(options.CompletionQueueEntries) && options.CompletionQueueEntries >= options.SubmissionQueueEntries && options.CompletionQueueEntries <= 1 << 20, nameof(options.CompletionQueueEntries), options.CompletionQueueEntries, "a power of two, at least SubmissionQueueEntries and at most 1048576");
        Require(IsPowerOfTwo(options.ReceiveBufferCount) && options.ReceiveBufferCount is >= 1 and <= 32768, nameof(options.ReceiveBufferCount), options.ReceiveBufferCount, "a power of two from 1 to 32768");
        Require(options.FileCacheMaxBytes >= 0, nameof(options.FileCacheMaxBytes), options.FileCacheMaxBytes, "0 (no cache) or positive");
        Require(options.FileCacheMaxFileSize is >= 0 and <= 64 * 1024 * 1024, nameof(options.FileCacheMaxFileSize), options.FileCacheMaxFileSize, "from 0 (no cache) to 67108864 bytes");
        Require(options.ReceiveBufferSize is >= 256 and <= 1 << 20, nameof(options.ReceiveBufferSize), options.ReceiveBufferSize, "from 256 to 1048576 bytes");
    }

    private static bool IsPowerOfTwo(int value) => value > 0 && (value & (value - 1)) == 0;

    private static void Require(bool condition, string name, object? value, string allowed)
    {
        if (!condition)
        {
            throw new ArgumentOutOfRangeException(
                $"{nameof(IoUringTransportOptions)}.{name}",
                value,
                $"Invalid io_uring transport setting {nameof(IoUringTransportOptions)}.{name} (configuration key {IoUringTransportOptionsSetup.SectionName}:{name}) = {value?.ToString() ?? "null"}: it must be {allowed}.");
        }
    }
}
