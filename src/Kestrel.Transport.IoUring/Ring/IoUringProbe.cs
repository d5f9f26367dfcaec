using Kestrel.Transport.IoUring.Interop;
using static Kestrel.Transport.IoUring.Interop.IoUringNative;

namespace Kestrel.Transport.IoUring.Ring;

/// <summary>Why io_uring cannot be used here.</summary>
internal enum UnavailableKind
{
    None,
    NotLinux,
    ForcedByEnvironment,
    SyscallMissing,
    Blocked,
    OutOfMemory,
    OpcodeMissing,
    Other,
}

/// <summary>
/// What this kernel's io_uring offers, found once per process by creating a small ring and asking it
/// (IORING_REGISTER_PROBE, feature bits, accepted setup flags). The one place capabilities are decided.
/// </summary>
internal sealed class IoUringProbe
{
    /// <summary>Set to 1 (or true) to make io_uring look unavailable, so the Sockets fallback can be tested.</summary>
    public const string ForceUnavailableVariable = "IOURING_FORCE_UNAVAILABLE";

    /// <summary>The minimum kernel: multishot receive (6.0) and DEFER_TASKRUN (6.1).</summary>
    public const string MinimumKernel = "6.1";

    private static readonly Lazy<IoUringProbe> s_current = new(() => Run(new RingOptions { SqEntries = 8, CqEntries = 16, RegisterRingFd = false }));

    private readonly bool[] _opcodes = new bool[256];

    public static IoUringProbe Current => s_current.Value;

    public UnavailableKind Kind { get; private init; }
    public string? Reason { get; private init; }
    public int Errno { get; private init; }
    public uint Features { get; private init; }
    public uint SetupFlags { get; private init; }
    public int LastOpcode { get; private init; }

    public bool IsSupported => Kind == UnavailableKind.None;

    public bool SupportsOpcode(byte opcode) => _opcodes[opcode];

    public bool HasFeature(uint feature) => (Features & feature) == feature;

    public bool AcceptsSetupFlag(uint flag) => (SetupFlags & flag) == flag;

    /// <summary>Opcodes the transport cannot work without.</summary>
    internal static readonly (byte Opcode, string Name)[] RequiredOpcodes =
    [
        (IORING_OP_NOP, "IORING_OP_NOP"),
        (IORING_OP_ACCEPT, "IORING_OP_ACCEPT"),
        (IORING_OP_RECV, "IORING_OP_RECV"),
        (IORING_OP_SENDMSG, "IORING_OP_SENDMSG"),
        (IORING_OP_SEND, "IORING_OP_SEND"),
        (IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"),
        (IORING_OP_READ, "IORING_OP_READ"),
        (IORING_OP_CLOSE, "IORING_OP_CLOSE"),
        (IORING_OP_SENDMSG_ZC, "IORING_OP_SENDMSG_ZC (marks Linux 6.1)"),
    ];

    public static bool IsForcedUnavailable()
    {
        string? value = Environment.GetEnvironmentVariable(ForceUnavailableVariable);
        return value is not null && (value == "1" || value.Equals("true", StringComparison.OrdinalIgnoreCase));
    }

    internal static unsafe IoUringProbe Run(RingOptions options)
    {
        if (!OperatingSystem.IsLinux())
        {
            return new IoUringProbe { Kind = UnavailableKind.NotLinux, Reason = "io_uring exists only on Linux." };
        }

        if (IsForcedUnavailable())
        {
            return new IoUringProbe
            {
                Kind = UnavailableKind.ForcedByEnvironment,
                Reason = $"io_uring was turned off by the environment variable {ForceUnavailableVariable}.",
            };
        }

        IoUringRing ring;
        try
        {
            ring = new IoUringRing(options);
        }
        catch (IoUringException e)
        {
            return FromSetupErrno(e.Errno);
        }

        using (ring)
        {
            bool[] opcodes = new bool[256];
            const int OpsLen = 256;
            int size = sizeof(io_uring_probe) + OpsLen * sizeof(io_uring_probe_op);
            byte* buffer = stackalloc byte[size];
            new Span<byte>(buffer, size).Clear();
            int ret = ring.Register(IORING_REGISTER_PROBE, buffer, OpsLen);
            if (ret < 0)
            {
                return new IoUringProbe
                {
                    Kind = UnavailableKind.OpcodeMissing,
                    Errno = -ret,
                    Reason = $"io_uring is present but cannot report its opcodes (IORING_REGISTER_PROBE: {ErrnoText.Describe(-ret)}). Linux {MinimumKernel} or later is required.",
                };
            }

            var probe = (io_uring_probe*)buffer;
            var ops = (io_uring_probe_op*)(buffer + sizeof(io_uring_probe));
            for (int i = 0; i < probe->ops_len; i++)
            {
                opcodes[ops[i].op] = (ops[i].flags & IO_URING_OP_SUPPORTED) != 0;
            }

            List<string> missing = [];
            foreach ((byte opcode, string name) in RequiredOpcodes)
            {
                if (!opcodes[opcode])
                {
                    missing.Add(name);
                }
            }

            uint requiredFeatures = IORING_FEAT_FAST_POLL | IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG | IORING_FEAT_SUBMIT_STABLE;
            if ((ring.Features & requiredFeatures) != requiredFeatures)
            {
                missing.Add($"features 0x{requiredFeatures & ~ring.Features:x} (FAST_POLL, NODROP, EXT_ARG, SUBMIT_STABLE)");
            }

            if (missing.Count > 0)
            {
                return new IoUringProbe
                {
                    Kind = UnavailableKind.OpcodeMissing,
                    Features = ring.Features,
                    SetupFlags = ring.SetupFlags,
                    LastOpcode = probe->last_op,
                    Reason = $"This kernel's io_uring lacks {string.Join(", ", missing)}. Linux {MinimumKernel} or later is required (running {Environment.OSVersion.Version}).",
                };
            }

            var supported = new IoUringProbe
            {
                Kind = UnavailableKind.None,
                Features = ring.Features,
                SetupFlags = ring.SetupFlags,
                LastOpcode = probe->last_op,
            };
            opcodes.CopyTo(supported._opcodes, 0);
            return supported;
        }
    }

    internal static IoUringProbe FromSetupErrno(int errno)
    {
        (UnavailableKind kind, string reason) = errno switch
        {
            Libc.ENOSYS => (UnavailableKind.SyscallMissing,
                $"io_uring_setup is not implemented by this kernel (ENOSYS): the kernel is too old or built without CONFIG_IO_URING, or a sandbox hides it. Linux {MinimumKernel} or later is required."),
            Libc.EPERM => (UnavailableKind.Blocked, DescribeEperm()),
            Libc.ENOMEM => (UnavailableKind.OutOfMemory,
                "io_uring_setup ran out of memory (ENOMEM): the locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) or the memory cgroup is too small for the rings. Raise the limit (for example `ulimit -l unlimited`, or LimitMEMLOCK= in a systemd unit) or use fewer reactors or smaller rings."),
            _ => (UnavailableKind.Other, $"io_uring_setup failed: {ErrnoText.Describe(errno)}."),
        };
        return new IoUringProbe { Kind = kind, Errno = errno, Reason = reason };
    }

    private static string DescribeEperm()
    {
        string? disabled = null;
        try
        {
            disabled = File.ReadAllText("/proc/sys/kernel/io_uring_disabled").Trim();
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        if (disabled is "1" or "2")
        {
            return $"io_uring is disabled by the kernel.io_uring_disabled sysctl (value {disabled}; EPERM). Set it to 0 (`sysctl -w kernel.io_uring_disabled=0`), or with value 1 add this process's group to kernel.io_uring_group.";
        }

        return "io_uring_setup was denied (EPERM), most likely by a container's seccomp profile: Docker 25+ and containerd 2.0+ block io_uring by default. Run with a seccomp profile that allows io_uring_setup, io_uring_enter and io_uring_register (see the README's troubleshooting section).";
    }
}
