using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Interop;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Abi;

/// <summary>
/// Verifies the hand-written interop (src/Kestrel.Transport.IoUring/Interop) against the kernel and libc
/// ABI: a C program compiled against this machine's headers reports every size, offset and constant,
/// and every disagreement is listed in one failure.
/// </summary>
public class AbiTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ProcessTimeout = TimeSpan.FromSeconds(15);

    /// <summary>Extra gcc arguments, e.g. -I to the output of a newer kernel's make headers_install.</summary>
    private const string ExtraCFlagsVariable = "IOURING_ABI_CFLAGS";

    [SkippableFact]
    public async Task InteropMirrors_ComparedWithSystemHeaders_AllStructsFieldsAndConstantsAgree()
    {
        if (!OperatingSystem.IsLinux())
        {
            CToolchain.Unavailable("the interop mirrors Linux headers, and this is not Linux");
        }

        string? gcc = CToolchain.FindOnPath("gcc");
        if (gcc is null)
        {
            CToolchain.Unavailable("gcc was not found on PATH");
        }

        string source = CAbiProgram.Generate(ManagedAbi.Structs, ManagedAbi.Constants);
        DirectoryInfo dir = Directory.CreateTempSubdirectory("kestrel-iouring-abi-");
        try
        {
            await File.WriteAllTextAsync(Path.Combine(dir.FullName, "abi.c"), source);
            string[] extraFlags = (Environment.GetEnvironmentVariable(ExtraCFlagsVariable) ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            (int exitCode, _, string errors) = await CToolchain.RunAsync(gcc!, [.. extraFlags, "-std=gnu11", "-O0", "-o", "abi", "abi.c"], dir.FullName, ProcessTimeout);
            if (exitCode != 0)
            {
                if (errors.Contains("fatal error:", StringComparison.Ordinal) && errors.Contains("No such file or directory", StringComparison.Ordinal))
                {
                    CToolchain.Unavailable($"a header is missing: {FirstLine(errors, "fatal error:")}");
                }

                output.WriteLine(source);
                Assert.Fail(
                    $"gcc could not compile the ABI program (exit {exitCode}; the program is in the test output). If a name "
                    + "the C# interop declares is newer than these headers, add it to Abi/UpstreamUapi.cs with its kernel "
                    + $"release and upstream value.\n{errors}");
            }

            (exitCode, string printed, errors) = await CToolchain.RunAsync(Path.Combine(dir.FullName, "abi"), [], dir.FullName, ProcessTimeout);
            Assert.True(exitCode == 0, $"The ABI program failed (exit {exitCode}): {errors}");

            CAbiReport c = CAbiProgram.Parse(printed);
            var comparison = AbiComparison.Run(c, ManagedAbi.Structs, ManagedAbi.Constants);
            output.WriteLine(comparison.Summary(c));
            if (comparison.Mismatches.Count > 0)
            {
                Assert.Fail(
                    $"{comparison.Mismatches.Count} ABI mismatch(es) between the C# interop and the headers ({c.HeadersVersion}):\n  "
                    + string.Join("\n  ", comparison.Mismatches)
                    + $"\n{comparison.Summary(c)}");
            }
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void ManagedAbi_Reflection_FindsEveryMirroredStructFieldAndConstant()
    {
        string[] found = ManagedAbi.Structs.Select(s => s.Name).ToArray();
        Assert.All(ManagedAbi.KnownStructNames, name => Assert.Contains(name, found));
        Assert.All(ManagedAbi.Structs, s => Assert.NotEmpty(s.Fields));

        // Union members are overlapping fields; each must be found, not just the first at an offset.
        ManagedStruct sqe = ManagedAbi.Structs.Single(s => s.Name == "io_uring_sqe");
        Assert.Equal(["addr2", "off"], sqe.Fields.Where(f => f.Offset == 8).Select(f => f.Name).Order(StringComparer.Ordinal));
        Assert.Contains(sqe.Fields, f => f.Offset == 28 && f.Name == "rw_flags");
        Assert.Contains(sqe.Fields, f => f.Offset == 28 && f.Name == "msg_ring_flags");
        Assert.Contains(ManagedAbi.Structs.Single(s => s.Name == "io_uring_params").Fields, f => f.Name == "resv" && f.ElementSize == 4);

        Assert.Contains(ManagedAbi.Constants, k => k.Owner == nameof(IoUringNative) && k.Name == nameof(IoUringNative.IORING_OP_RECV));
        Assert.Contains(ManagedAbi.Constants, k => k.Owner == nameof(Libc) && k.Name == nameof(Libc.ECANCELED));
        Assert.Contains(ManagedAbi.Constants, k => k.Name == nameof(Libc.MAP_FAILED) && k.Value == -1);
        Assert.Empty(ManagedAbi.UnsupportedConstants);
    }

    [Fact]
    public void UpstreamUapiTable_EveryRow_NamesAnInteropMember()
    {
        Assert.All(UpstreamUapi.Constants, row => Assert.Contains(ManagedAbi.Constants, k => k.Name == row.Name));
        Assert.All(UpstreamUapi.Fields, row => Assert.Contains(
            ManagedAbi.Structs.Single(s => s.Name == row.Struct).Fields, f => f.Name == row.Field));
        Assert.All(UpstreamUapi.SignednessExceptions.Keys, key =>
        {
            string[] parts = key.Split('.');
            Assert.Contains(ManagedAbi.Structs.Single(s => s.Name == parts[0]).Fields, f => f.Name == parts[1]);
        });
    }

    [SkippableFact]
    public void IoUringSetup_ZeroEntries_FailsWithEinval()
    {
        IoUringRequirement.Ensure();
        var p = default(io_uring_params);
        int ret;
        int errno;
        // The pointer is to a zeroed local that outlives the call; the kernel only reads it here.
        unsafe
        {
            ret = IoUringNative.io_uring_setup(0, &p);
            errno = Marshal.GetLastPInvokeError();
        }

        Assert.Equal(-1, ret);
        Assert.Equal(Libc.EINVAL, errno);
    }

    [SkippableFact]
    public void IoUringEnterAndRegister_FdThatIsNotARing_FailWithEopnotsupp()
    {
        IoUringRequirement.Ensure();
        int fd = Libc.eventfd(0, Libc.EFD_CLOEXEC);
        Assert.True(fd >= 0, $"eventfd failed: errno {Marshal.GetLastPInvokeError()}");
        try
        {
            int enterRet;
            int enterErrno;
            int registerRet;
            int registerErrno;
            // Null argument pointers with zero sizes/counts: the kernel rejects the fd before reading any.
            unsafe
            {
                enterRet = IoUringNative.io_uring_enter(fd, 0, 0, IoUringNative.IORING_ENTER_GETEVENTS, null, 0);
                enterErrno = Marshal.GetLastPInvokeError();
                registerRet = IoUringNative.io_uring_register(fd, IoUringNative.IORING_REGISTER_PROBE, null, 0);
                registerErrno = Marshal.GetLastPInvokeError();
            }

            Assert.Equal((-1, Libc.EOPNOTSUPP), (enterRet, enterErrno));
            Assert.Equal((-1, Libc.EOPNOTSUPP), (registerRet, registerErrno));
        }
        finally
        {
            Libc.close(fd);
        }
    }

    private static string FirstLine(string text, string containing)
        => text.Split('\n').FirstOrDefault(l => l.Contains(containing, StringComparison.Ordinal))?.Trim() ?? text.Trim();
}
