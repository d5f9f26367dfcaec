using System.Diagnostics.CodeAnalysis;
using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring.Benchmarks;

/// <summary>Checks shared by the benchmarks: a benchmark that measures something broken must not report a number.</summary>
internal static class BenchmarkGuard
{
    /// <summary>Fails the run where io_uring is unavailable, with the probe's reason.</summary>
    public static void RequireIoUring()
    {
        IoUringProbe probe = IoUringProbe.Current;
        if (!probe.IsSupported)
        {
            throw new InvalidOperationException($"io_uring is unavailable, nothing to measure: {probe.Reason}");
        }
    }

    /// <summary>
    /// Rings are single-issuer: BenchmarkDotNet must run [GlobalSetup], every benchmark invocation and
    /// [GlobalCleanup] on the one thread that created the ring. (The kernel enforces it as well:
    /// io_uring_enter from another thread fails with EEXIST, which the benchmarks turn into an exception.)
    /// </summary>
    public static void RequireOwnerThread(int ownerThreadId, string where)
    {
        if (Environment.CurrentManagedThreadId != ownerThreadId)
        {
            Fail($"{where} ran on thread {Environment.CurrentManagedThreadId}, but the ring belongs to thread {ownerThreadId}.");
        }
    }

    [DoesNotReturn]
    public static void Fail(string message) => throw new InvalidOperationException(message);
}
