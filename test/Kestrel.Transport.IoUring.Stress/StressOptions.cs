using System.Globalization;

namespace Kestrel.Transport.IoUring.Stress;

/// <summary>The command line of the stress tool.</summary>
internal sealed class StressOptions
{
    public const string Usage = """
        Usage: Kestrel.Transport.IoUring.Stress --transport iouring|sockets [options]
          --transport T        iouring (default) or sockets: the transport both samples run with
          --duration S         seconds of load in total (default 120), split 60/40 between Echo and PlatformBenchmarks
          --target T           both (default), echo or http
          --workers N          connections running chaos scenarios at any time (default 32)
          --hold N             connections held open for the whole load phase (default 3000)
          --storm N            connects fired at once in each storm (default 2000; the backlog is 512)
          --storm-interval S   seconds between storms (default 30)
          --max-message B      largest echo message in bytes (default 4194304)
          --progress S         seconds between progress lines (default 5)
          --seed N             run seed (default: random; printed so a run can be repeated)
        Exit code 0 when every byte and response verified and the server recovered; 1 otherwise; 2 on bad usage.
        """;

    public string Transport { get; private set; } = "iouring";

    public int DurationSeconds { get; private set; } = 120;

    public string Target { get; private set; } = "both";

    public int Workers { get; private set; } = 32;

    public int Hold { get; private set; } = 3000;

    public int Storm { get; private set; } = 2000;

    public int StormIntervalSeconds { get; private set; } = 30;

    public long MaxMessageBytes { get; private set; } = 4 * 1024 * 1024;

    public int ProgressSeconds { get; private set; } = 5;

    public ulong Seed { get; private set; } = (ulong)Random.Shared.NextInt64(1, int.MaxValue);

    public static StressOptions? Parse(string[] args)
    {
        var options = new StressOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            bool ok = args[i] switch
            {
                "--transport" when value is "iouring" or "sockets" => Set(() => options.Transport = value),
                "--target" when value is "both" or "echo" or "http" => Set(() => options.Target = value),
                "--duration" => Int(value, 5, out int d) && Set(() => options.DurationSeconds = d),
                "--workers" => Int(value, 1, out int w) && Set(() => options.Workers = w),
                "--hold" => Int(value, 0, out int h) && Set(() => options.Hold = h),
                "--storm" => Int(value, 0, out int s) && Set(() => options.Storm = s),
                "--storm-interval" => Int(value, 1, out int si) && Set(() => options.StormIntervalSeconds = si),
                "--max-message" => Int(value, 1, out int m) && Set(() => options.MaxMessageBytes = m),
                "--progress" => Int(value, 1, out int p) && Set(() => options.ProgressSeconds = p),
                "--seed" => ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out ulong seed) && Set(() => options.Seed = seed),
                _ => false,
            };
            if (!ok)
            {
                Console.Error.WriteLine($"Unknown or incomplete argument '{args[i]}'.");
                Console.Error.WriteLine(Usage);
                return null;
            }

            i++;
        }

        return options;
    }

    private static bool Set(Action set)
    {
        set();
        return true;
    }

    private static bool Int(string? value, int min, out int result)
        => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out result) && result >= min;
}
