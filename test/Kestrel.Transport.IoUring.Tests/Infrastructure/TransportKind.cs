using System.Reflection;
using Xunit.Sdk;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>The transports every functional test runs against: ours, and Kestrel's Sockets as the reference.</summary>
public enum TransportKind
{
    IoUring,
    Sockets,
}

/// <summary>Runs a <c>[SkippableTheory]</c> once per <see cref="TransportKind"/>.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class AllTransportsAttribute : DataAttribute
{
    public override IEnumerable<object[]> GetData(MethodInfo testMethod)
    {
        yield return [TransportKind.IoUring];
        yield return [TransportKind.Sockets];
    }
}

public static class TransportKindExtensions
{
    /// <summary>
    /// Skips (or, under IOURING_REQUIRED=1, fails) an io_uring run where io_uring is unavailable; Sockets
    /// runs always proceed.
    /// </summary>
    public static void EnsureAvailable(this TransportKind transport)
    {
        if (transport == TransportKind.IoUring)
        {
            IoUringRequirement.Ensure();
        }
    }

    /// <summary>The namespace prefix of the <c>ConnectionContext</c> type each transport hands to Kestrel.</summary>
    public static string ConnectionTypePrefix(this TransportKind transport) => transport switch
    {
        TransportKind.IoUring => "Kestrel.Transport.IoUring.",
        TransportKind.Sockets => "Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets.",
        _ => throw new ArgumentOutOfRangeException(nameof(transport)),
    };
}
