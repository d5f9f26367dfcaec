namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>
/// Tests that run the dotnet CLI on the repository's projects (pack, Native AOT publish) share this
/// collection so they run one at a time: each is minutes of CPU, and side by side on a small machine they
/// would approach their time limits.
/// </summary>
[CollectionDefinition(Name)]
public sealed class DotnetCliCollection
{
    public const string Name = "dotnet CLI";
}
