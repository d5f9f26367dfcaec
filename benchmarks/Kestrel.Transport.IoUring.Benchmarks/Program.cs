using BenchmarkDotNet.Running;

namespace Kestrel.Transport.IoUring.Benchmarks;

public static class Program
{
    /// <summary>See benchmarks/README.md; for example: -- --filter '*' --job short.</summary>
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
