namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>This process's open file descriptors, read from /proc/self/fd.</summary>
public static class FileDescriptors
{
    /// <summary>Open descriptors and what each points at (socket:[inode], anon_inode:[io_uring], a path...), except loaded code.</summary>
    public static Dictionary<int, string> Snapshot()
    {
        var result = new Dictionary<int, string>();
        foreach (string path in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            if (!int.TryParse(Path.GetFileName(path), out int fd))
            {
                continue;
            }

            string target;
            try
            {
                target = new FileInfo(path).LinkTarget ?? "?";
            }
            catch (IOException)
            {
                // Closed between listing and reading: it no longer counts.
                continue;
            }

            // The runtime keeps every loaded assembly, native library and symbol file (read for stack
            // traces) open for good: loading one is not a leak.
            if (target.EndsWith(".dll", StringComparison.Ordinal) || target.EndsWith(".pdb", StringComparison.Ordinal) || target.Contains(".so", StringComparison.Ordinal))
            {
                continue;
            }

            // The directory handle this enumeration itself holds open.
            if (target.StartsWith("/proc/", StringComparison.Ordinal) && target.EndsWith("/fd", StringComparison.Ordinal))
            {
                continue;
            }

            result[fd] = target;
        }

        return result;
    }

    /// <summary>Waits (bounded) until no more descriptors are open than in <paramref name="before"/>; returns the extra ones if any remain.</summary>
    public static async Task<IReadOnlyList<string>> WaitForNoGrowthAsync(Dictionary<int, string> before, TimeSpan timeout)
    {
        DateTime deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            Dictionary<int, string> now = Snapshot();
            if (now.Count <= before.Count)
            {
                return [];
            }

            if (DateTime.UtcNow >= deadline)
            {
                return now.Where(kv => !before.TryGetValue(kv.Key, out string? target) || target != kv.Value)
                    .Select(kv => $"fd {kv.Key} -> {kv.Value}")
                    .ToList();
            }

            // Kestrel's Sockets transport leaves a listen socket that failed to bind to its finalizer, so
            // count only descriptors that are still reachable.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            await Task.Delay(100);
        }
    }
}
