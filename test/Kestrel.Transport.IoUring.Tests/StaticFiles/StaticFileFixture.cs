using System.Security.Cryptography;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Transport.Internal;

namespace Kestrel.Transport.IoUring.Tests.StaticFiles;

/// <summary>
/// A temp directory of files with pseudo-random contents (a misplaced offset shows up as wrong bytes),
/// shared by the static file tests and deleted at the end. The large file is made on first use.
/// </summary>
public sealed class StaticFileFixture : IDisposable
{
    public const long LargeSize = 100L * 1024 * 1024 + 13; // > 100 MB

    public static readonly long[] Sizes = [0, 1, 4095, 4096, 4097, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 1024 * 1024];

    private readonly Lazy<string> _large;

    public StaticFileFixture()
    {
        Root = Directory.CreateTempSubdirectory("iouring-static-").FullName;
        foreach (long size in Sizes)
        {
            Create(NameFor(size), size);
        }

        _large = new Lazy<string>(() => Create("large.bin", LargeSize));
    }

    public string Root { get; }

    /// <summary>The name of the shared file of <paramref name="size"/> bytes.</summary>
    public static string NameFor(long size) => $"f{size}.bin";

    public string PathFor(string name) => Path.Combine(Root, name);

    /// <summary>The large file's name, creating it on first use.</summary>
    public string Large => _large.Value;

    /// <summary>Writes <paramref name="size"/> pseudo-random bytes (seeded by <paramref name="name"/> and <paramref name="seed"/>) to Root/name.</summary>
    public string Create(string name, long size, int seed = 0)
    {
        string path = PathFor(name);
        using (FileStream stream = File.Create(path))
        {
            var random = new Random(unchecked(seed * 7919 + (int)size));
            byte[] block = new byte[1024 * 1024];
            for (long left = size; left > 0; left -= block.Length)
            {
                random.NextBytes(block);
                stream.Write(block, 0, (int)Math.Min(left, block.Length));
            }
        }

        return name;
    }

    public byte[] Read(string name) => File.ReadAllBytes(PathFor(name));

    public string Hash(string name)
    {
        using FileStream stream = File.OpenRead(PathFor(name));
        return Convert.ToHexString(SHA256.HashData(stream));
    }

    /// <summary>Waits until the file's last change is old enough for the ring sender to cache it.</summary>
    public async Task WaitUntilCacheableAsync(string name)
    {
        Assert.True(NativeFile.TryGetRegularFileIdentity(PathFor(name), out FileIdentity identity));
        long ageNs = NativeFile.RealtimeNowNs() - Math.Max(identity.ChangedNs, identity.ModifiedNs);
        long waitMs = (FileContentCache.MinimumAgeNs - ageNs) / 1_000_000 + 100;
        if (waitMs > 0)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(waitMs));
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a temp directory.
        }
    }
}
