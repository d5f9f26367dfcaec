using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// Contents of small files, keyed by the path the application asked for, bounded in total size.
/// An entry is served only while the file's identity (device, inode, size, mtime, ctime from one
/// statx per request) equals the identity it was read under, so a changed, replaced or chmod'ed
/// file is never served from here. A file is cached only once its last change is at least
/// <see cref="MinimumAgeNs"/> old: file timestamps come from a coarse clock, and a file changed twice
/// within one tick could otherwise keep the same identity with different contents.
/// </summary>
internal sealed class FileContentCache(long maxBytes, int maxFileSize)
{
    public const long MinimumAgeNs = 2_000_000_000;

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private long _bytes;

    public long Bytes => Volatile.Read(ref _bytes);

    public int Count => _entries.Count;

    /// <summary>True when a file of this identity may be stored (small enough, and not changed too recently).</summary>
    public bool MayStore(in FileIdentity identity)
        => identity.Size > 0
        && identity.Size <= maxFileSize
        && identity.Size <= maxBytes
        && NativeFile.RealtimeNowNs() - Math.Max(identity.ChangedNs, identity.ModifiedNs) >= MinimumAgeNs;

    public bool TryGet(string path, in FileIdentity identity, [NotNullWhen(true)] out byte[]? content)
    {
        if (_entries.TryGetValue(path, out Entry? entry))
        {
            if (entry.Identity == identity)
            {
                content = entry.Content;
                return true;
            }

            // The file changed since it was read: this entry can never be served again.
            Remove(path, entry);
        }

        content = null;
        return false;
    }

    /// <summary>Stores <paramref name="content"/>, read entirely while the file had <paramref name="identity"/> before and after.</summary>
    public void Store(string path, in FileIdentity identity, byte[] content)
    {
        if (!MayStore(identity) || content.Length != identity.Size)
        {
            return;
        }

        if (_entries.TryGetValue(path, out Entry? existing))
        {
            if (existing.Identity == identity)
            {
                return;
            }

            Remove(path, existing);
        }

        // Reserve the bytes first, evicting others if needed, so the total never exceeds maxBytes.
        while (true)
        {
            long current = Volatile.Read(ref _bytes);
            if (current + content.Length > maxBytes)
            {
                if (!EvictOne())
                {
                    return;
                }

                continue;
            }

            if (Interlocked.CompareExchange(ref _bytes, current + content.Length, current) == current)
            {
                break;
            }
        }

        if (!_entries.TryAdd(path, new Entry(identity, content)))
        {
            // Another request stored it first.
            Interlocked.Add(ref _bytes, -content.Length);
        }
    }

    private bool EvictOne()
    {
        foreach (KeyValuePair<string, Entry> pair in _entries)
        {
            if (Remove(pair.Key, pair.Value))
            {
                return true;
            }
        }

        return false;
    }

    private bool Remove(string path, Entry entry)
    {
        if (_entries.TryRemove(new KeyValuePair<string, Entry>(path, entry)))
        {
            Interlocked.Add(ref _bytes, -entry.Content.Length);
            return true;
        }

        return false;
    }

    private sealed record Entry(FileIdentity Identity, byte[] Content);
}
