namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Finds files of the source tree from the test's output directory.</summary>
internal static class RepositoryLayout
{
    private const string SolutionFile = "Kestrel.Transport.IoUring.sln";

    /// <summary>The directory holding the solution file; throws (failing the test) when the tests run outside the source tree.</summary>
    public static string Root { get; } = FindRoot();

    public static string PathOf(params string[] relative) => Path.Combine([Root, .. relative]);

    private static string FindRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, SolutionFile)))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"No {SolutionFile} above {AppContext.BaseDirectory}: these tests read the source tree and must run from a build inside it.");
    }
}
