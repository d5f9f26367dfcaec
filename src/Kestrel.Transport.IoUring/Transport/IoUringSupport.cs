using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring;

/// <summary>Why io_uring cannot be used in this process.</summary>
public enum IoUringUnavailableReason
{
    /// <summary>io_uring is usable.</summary>
    None,

    /// <summary>The operating system is not Linux.</summary>
    NotLinux,

    /// <summary>The IOURING_FORCE_UNAVAILABLE environment variable turned it off.</summary>
    ForcedByEnvironment,

    /// <summary>io_uring_setup does not exist (ENOSYS): an old or stripped kernel, or a sandbox hiding it.</summary>
    SyscallMissing,

    /// <summary>io_uring_setup was denied (EPERM): a container seccomp profile or the kernel.io_uring_disabled sysctl.</summary>
    Blocked,

    /// <summary>io_uring_setup ran out of locked memory (ENOMEM).</summary>
    OutOfMemory,

    /// <summary>The kernel's io_uring lacks an operation or feature the transport needs (older than Linux 6.1).</summary>
    KernelTooOld,

    /// <summary>io_uring_setup failed for another reason.</summary>
    Other,
}

/// <summary>
/// Whether the io_uring transport can run in this process, and if not, why. Probed once per process.
/// </summary>
public static class IoUringSupport
{
    /// <summary>True when io_uring is usable here with everything the transport needs.</summary>
    public static bool IsSupported => IoUringProbe.Current.IsSupported;

    /// <summary>Why io_uring is unavailable, as a category.</summary>
    public static IoUringUnavailableReason Reason => IoUringProbe.Current.Kind switch
    {
        UnavailableKind.None => IoUringUnavailableReason.None,
        UnavailableKind.NotLinux => IoUringUnavailableReason.NotLinux,
        UnavailableKind.ForcedByEnvironment => IoUringUnavailableReason.ForcedByEnvironment,
        UnavailableKind.SyscallMissing => IoUringUnavailableReason.SyscallMissing,
        UnavailableKind.Blocked => IoUringUnavailableReason.Blocked,
        UnavailableKind.OutOfMemory => IoUringUnavailableReason.OutOfMemory,
        UnavailableKind.OpcodeMissing => IoUringUnavailableReason.KernelTooOld,
        _ => IoUringUnavailableReason.Other,
    };

    /// <summary>A sentence saying why io_uring is unavailable and what to do about it; null when it is supported.</summary>
    public static string? UnavailableMessage => IoUringProbe.Current.Reason;

    /// <summary>The name of the environment variable that, set to 1, makes io_uring look unavailable.</summary>
    public static string ForceUnavailableEnvironmentVariable => IoUringProbe.ForceUnavailableVariable;
}
