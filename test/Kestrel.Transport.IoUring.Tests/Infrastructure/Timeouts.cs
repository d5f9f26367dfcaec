namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Upper bounds for every await in the functional tests; generous because the CI machine is small and shared.</summary>
public static class Timeouts
{
    /// <summary>Any single step that should take milliseconds.</summary>
    public static readonly TimeSpan Step = TimeSpan.FromSeconds(30);

    /// <summary>A step that moves hundreds of megabytes or thousands of connections.</summary>
    public static readonly TimeSpan Bulk = TimeSpan.FromSeconds(120);

    /// <summary>How long leak checks wait for late returns (pool blocks, file descriptors).</summary>
    public static readonly TimeSpan Settle = TimeSpan.FromSeconds(5);
}
