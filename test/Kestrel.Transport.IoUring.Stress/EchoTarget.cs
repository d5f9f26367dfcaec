using System.Net;
using System.Net.Sockets;

namespace Kestrel.Transport.IoUring.Stress;

/// <summary>
/// Drives samples/Echo. Every connection sends its own seeded pattern and checks every byte that comes
/// back against it, with the writer and the reader running at once (many writes in flight).
/// </summary>
internal sealed class EchoTarget(IPEndPoint endPoint, Stats stats, StressOptions options) : LoadTarget(endPoint, stats, options)
{
    private const long SlowReaderMax = 256 * 1024;
    private const long SlowWriterMax = 16 * 1024;

    public override string Name => "echo";

    public override IReadOnlyList<(string Kind, int Weight)> Scenarios { get; } =
    [
        ("duplex", 30),       // write and read concurrently, then close after the last byte is back
        ("half-close", 30),   // write everything, shutdown(SHUT_WR), read until the server's FIN
        ("reset", 20),        // RST (linger 0 + close) at a random point of the stream
        ("slow-reader", 10),  // the server's sends back up: backpressure on the echo
        ("slow-writer", 10),  // dribbles tiny pieces with pauses
    ];

    public override Task RunScenarioAsync(string kind, Random random, CancellationToken cancellationToken)
    {
        long size = kind switch
        {
            "slow-reader" => Math.Min(RandomSize(random), SlowReaderMax),
            "slow-writer" => Math.Min(RandomSize(random), SlowWriterMax),
            _ => RandomSize(random),
        };
        long resetAt = kind == "reset" ? random.NextInt64(0, size + 1) : -1;
        int writerSeed = random.Next();
        int readerSeed = random.Next();
        return RunConnectionAsync(kind, async (socket, id, ct) =>
        {
            ulong seed = SeedFor(id);
            using var failed = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var state = new ConversationState();
            Task writer = Guarded(WriteAsync(socket, seed, size, kind, resetAt, new Random(writerSeed), state, failed.Token), failed);
            Task reader = Guarded(ReadAsync(socket, seed, size, kind, new Random(readerSeed), state, failed.Token), failed);
            await Task.WhenAll(writer, reader);
            if (kind == "reset")
            {
                Stats.Fault("client-reset");
            }
            else if (kind is "half-close" or "slow-reader" or "slow-writer")
            {
                Stats.Fault(kind);
            }
        }, cancellationToken);
    }

    /// <summary>Log-uniform from 1 byte to the configured maximum (several MB): many small, some huge.</summary>
    private long RandomSize(Random random) => (long)Math.Max(1, Math.Round(Math.Exp(random.NextDouble() * Math.Log(Options.MaxMessageBytes))));

    /// <summary>If one side fails, cancel the other so the connection ends at once with the real error.</summary>
    private static async Task Guarded(Task task, CancellationTokenSource failed)
    {
        try
        {
            await task;
        }
        catch
        {
            await failed.CancelAsync();
            throw;
        }
    }

    private sealed class ConversationState
    {
        public volatile bool ResetSent;
    }

    private async Task WriteAsync(Socket socket, ulong seed, long size, string kind, long resetAt, Random random, ConversationState state, CancellationToken cancellationToken)
    {
        byte[] buffer = new byte[kind == "slow-writer" ? 64 : 1024 * 1024];
        long offset = 0;
        long end = resetAt >= 0 ? resetAt : size;
        while (offset < end)
        {
            int max = kind == "slow-writer" ? 64 : random.Next(4) switch { 0 => 100, 1 => 4096, 2 => 65536, _ => buffer.Length };
            int n = (int)Math.Min(random.Next(1, max + 1), end - offset);
            Pattern.Fill(buffer.AsSpan(0, n), seed, offset);
            await SendAllAsync(socket, buffer.AsMemory(0, n), cancellationToken);
            offset += n;
            Interlocked.Add(ref Stats.BytesSent, n);
            if (kind == "slow-writer")
            {
                await Task.Delay(random.Next(1, 10), cancellationToken);
            }
        }

        if (resetAt >= 0)
        {
            state.ResetSent = true;
            Reset(socket);
            return;
        }

        if (kind != "duplex")
        {
            socket.Shutdown(SocketShutdown.Send);
        }
    }

    private async Task ReadAsync(Socket socket, ulong seed, long size, string kind, Random random, ConversationState state, CancellationToken cancellationToken)
    {
        byte[] buffer = new byte[64 * 1024];
        long received = 0;
        while (true)
        {
            int want = kind == "slow-reader" ? random.Next(1, 4097) : buffer.Length;
            int n;
            try
            {
                n = await socket.ReceiveAsync(buffer.AsMemory(0, want), SocketFlags.None, cancellationToken);
            }
            catch (Exception) when (state.ResetSent)
            {
                return; // our own RST closed the socket under this receive
            }

            if (n == 0)
            {
                if (state.ResetSent)
                {
                    return;
                }

                if (kind == "duplex" || received != size)
                {
                    throw new IOException($"The server closed after {received} of {size} echoed bytes.");
                }

                return; // half-close: every byte back, then the server's FIN
            }

            long mismatch = Pattern.FirstMismatch(buffer.AsSpan(0, n), seed, received);
            if (mismatch >= 0)
            {
                throw new InvalidDataException($"Echoed byte {mismatch} of {size} differs from what this connection sent (corruption or another connection's data).");
            }

            received += n;
            Interlocked.Add(ref Stats.BytesVerified, n);
            if (received > size)
            {
                throw new InvalidDataException($"The server echoed {received} bytes, more than the {size} sent.");
            }

            if (kind == "duplex" && received == size)
            {
                return;
            }

            if (kind == "slow-reader")
            {
                await Task.Delay(random.Next(1, 15), cancellationToken);
            }
        }
    }

    protected override async Task StormConversationAsync(Socket socket, long id, Random random, CancellationToken cancellationToken)
    {
        ulong seed = SeedFor(id);
        int size = random.Next(1, 1025);
        byte[] data = new byte[size];
        Pattern.Fill(data, seed, 0);
        await SendAllAsync(socket, data, cancellationToken);
        Interlocked.Add(ref Stats.BytesSent, size);
        socket.Shutdown(SocketShutdown.Send);
        await ReadExactlyAndVerifyAsync(socket, seed, 0, size, cancellationToken);
        if (await socket.ReceiveAsync(new byte[1], SocketFlags.None, cancellationToken) != 0)
        {
            throw new InvalidDataException("The server echoed more than was sent.");
        }
    }

    protected override async Task PingAsync(HeldConnection held, Random random, CancellationToken cancellationToken)
    {
        int size = random.Next(1, 1025);
        byte[] data = new byte[size];
        Pattern.Fill(data, held.Seed, held.Offset);
        await SendAllAsync(held.Socket, data, cancellationToken);
        Interlocked.Add(ref Stats.BytesSent, size);
        await ReadExactlyAndVerifyAsync(held.Socket, held.Seed, held.Offset, size, cancellationToken);
        held.Offset += size;
    }

    protected override async Task CloseHeldAsync(HeldConnection held, CancellationToken cancellationToken)
    {
        held.Socket.Shutdown(SocketShutdown.Send);
        if (await held.Socket.ReceiveAsync(new byte[1], SocketFlags.None, cancellationToken) != 0)
        {
            throw new InvalidDataException("A held connection received bytes it never sent.");
        }
    }

    public override async Task<bool> FreshConnectionWorksAsync(CancellationToken cancellationToken)
    {
        using Socket socket = await ConnectAsync(EndPoint, cancellationToken);
        ulong seed = SeedFor(NextId());
        byte[] data = new byte[100_000];
        Pattern.Fill(data, seed, 0);
        await SendAllAsync(socket, data, cancellationToken);
        socket.Shutdown(SocketShutdown.Send);
        await ReadExactlyAndVerifyAsync(socket, seed, 0, data.Length, cancellationToken);
        return await socket.ReceiveAsync(new byte[1], SocketFlags.None, cancellationToken) == 0;
    }

    private async Task ReadExactlyAndVerifyAsync(Socket socket, ulong seed, long offset, int count, CancellationToken cancellationToken)
    {
        byte[] buffer = new byte[count];
        int read = 0;
        while (read < count)
        {
            int n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, cancellationToken);
            if (n == 0)
            {
                throw new IOException($"The server closed after {read} of {count} echoed bytes.");
            }

            read += n;
        }

        long mismatch = Pattern.FirstMismatch(buffer, seed, offset);
        if (mismatch >= 0)
        {
            throw new InvalidDataException($"Echoed byte {mismatch} differs from what this connection sent.");
        }

        Interlocked.Add(ref Stats.BytesVerified, count);
    }
}
