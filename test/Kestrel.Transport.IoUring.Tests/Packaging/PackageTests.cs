using System.IO.Compression;
using System.Reflection;
using System.Reflection.PortableExecutable;
using System.Xml.Linq;
using Kestrel.Transport.IoUring.Tests.Infrastructure;

namespace Kestrel.Transport.IoUring.Tests.Packaging;

/// <summary>
/// Runs the real <c>dotnet pack</c> on the library and inspects the .nupkg it writes. These tests shell
/// out on purpose: what lands in the package (readme, license, docs, symbols, repository metadata) is
/// decided by MSBuild and NuGet at pack time, and only running them proves it. If dotnet cannot be run
/// the tests fail; they never skip.
/// </summary>
[Collection(DotnetCliCollection.Name)]
public sealed class PackageTests(PackageTests.PackedLibrary package) : IClassFixture<PackageTests.PackedLibrary>
{
    private const string PackageId = "Kestrel.Transport.IoUring";

    [Fact]
    public void Pack_Library_ContainsAssemblyDocsAndReadme()
    {
        Assert.Contains($"lib/net10.0/{PackageId}.dll", package.Entries);
        Assert.Contains($"lib/net10.0/{PackageId}.xml", package.Entries);
        Assert.Contains("README.md", package.Entries);
        Assert.Equal(
            File.ReadAllText(RepositoryLayout.PathOf("README.md")),
            package.ReadText("README.md"));
    }

    [Fact]
    public void Pack_Library_NuspecDeclaresLicenseReadmeRepositoryAndTags()
    {
        XElement metadata = package.NuspecMetadata;

        Assert.Equal(PackageId, Child(metadata, "id").Value);
        Assert.Equal("0.1.0", Child(metadata, "version").Value);

        XElement license = Child(metadata, "license");
        Assert.Equal("expression", license.Attribute("type")?.Value);
        Assert.Equal("MIT", license.Value);

        Assert.Equal("README.md", Child(metadata, "readme").Value);
        Assert.Equal("git", Child(metadata, "repository").Attribute("type")?.Value);
        Assert.Equal("kestrel io_uring aspnetcore linux transport", Child(metadata, "tags").Value);
    }

    [Fact]
    public void Pack_Library_EmbedsPortablePdbInsteadOfSymbolPackage()
    {
        // The PDB travels inside the DLL (DebugType embedded), so neither a loose .pdb nor a .snupkg exists.
        Assert.DoesNotContain(package.Entries, e => e.EndsWith(".pdb", StringComparison.OrdinalIgnoreCase));
        Assert.Empty(package.SymbolPackages);

        using var dll = new MemoryStream(package.ReadBytes($"lib/net10.0/{PackageId}.dll"));
        using var pe = new PEReader(dll);
        Assert.Contains(pe.ReadDebugDirectory(), entry => entry.Type == DebugDirectoryEntryType.EmbeddedPortablePdb);
    }

    private static XElement Child(XElement parent, string localName)
        => parent.Elements().SingleOrDefault(e => e.Name.LocalName == localName)
            ?? throw new Xunit.Sdk.XunitException($"The nuspec has no <{localName}>:\n{parent}");

    /// <summary>Packs the library once for the class into a temporary folder, and deletes it afterwards.</summary>
    public sealed class PackedLibrary : IAsyncLifetime
    {
        // A cold build of the library takes about 40 s on two busy cores; normally it is already built.
        private static readonly TimeSpan PackTimeout = TimeSpan.FromMinutes(3);

        private readonly DirectoryInfo _output = Directory.CreateTempSubdirectory("kestrel-iouring-pack-");
        private byte[] _nupkg = [];

        public IReadOnlyList<string> Entries { get; private set; } = [];

        public IReadOnlyList<string> SymbolPackages { get; private set; } = [];

        public XElement NuspecMetadata { get; private set; } = new("metadata");

        public async Task InitializeAsync()
        {
            // Pack the configuration these tests were built in: the library is then already built and
            // up to date, so the pack is incremental. Restore runs as usual; it is a quick no-op when the
            // assets are current, and --no-restore would pack against stale assets when they are not.
            string configuration = typeof(PackageTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";
            string project = RepositoryLayout.PathOf("src", "Kestrel.Transport.IoUring", "Kestrel.Transport.IoUring.csproj");

            // No node reuse and no compiler server: a build node left running would hold the redirected
            // output open, and the test would wait for it.
            string[] arguments =
            [
                "pack", project, "-c", configuration, "-o", _output.FullName,
                "-nologo", "-nodeReuse:false", "-p:UseSharedCompilation=false",
            ];
            (int exitCode, string output) = await DotnetCli.RunAsync(arguments, RepositoryLayout.Root, PackTimeout);
            Assert.True(exitCode == 0, $"dotnet {string.Join(' ', arguments)} exited with {exitCode}:\n{output}");

            string nupkgPath = Assert.Single(Directory.GetFiles(_output.FullName, "*.nupkg"));
            _nupkg = await File.ReadAllBytesAsync(nupkgPath);
            SymbolPackages = Directory.GetFiles(_output.FullName, "*.snupkg");

            using ZipArchive zip = Open();
            Entries = [.. zip.Entries.Select(e => e.FullName)];
            XDocument nuspec = XDocument.Parse(ReadText($"{PackageId}.nuspec"));
            NuspecMetadata = nuspec.Root?.Elements().SingleOrDefault(e => e.Name.LocalName == "metadata")
                ?? throw new InvalidDataException($"The nuspec has no <metadata>:\n{nuspec}");
        }

        public Task DisposeAsync()
        {
            _output.Delete(recursive: true);
            return Task.CompletedTask;
        }

        public byte[] ReadBytes(string entryName)
        {
            using ZipArchive zip = Open();
            ZipArchiveEntry entry = zip.GetEntry(entryName) ?? throw new Xunit.Sdk.XunitException($"The package has no {entryName}.");
            using Stream stream = entry.Open();
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            return copy.ToArray();
        }

        public string ReadText(string entryName)
        {
            using var reader = new StreamReader(new MemoryStream(ReadBytes(entryName)));
            return reader.ReadToEnd();
        }

        private ZipArchive Open() => new(new MemoryStream(_nupkg), ZipArchiveMode.Read);
    }
}
