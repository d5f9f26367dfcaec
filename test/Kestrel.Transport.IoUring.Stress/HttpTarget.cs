using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Kestrel.Transport.IoUring.Stress;

/// <summary>
/// Drives samples/PlatformBenchmarks with raw HTTP/1.1: plain keep-alive requests and pipelines of up
/// to 32, a random mix of /plaintext, /json and a 404 path, every response checked in order (status,
/// Content-Length, body). Also resets mid-pipeline and slow readers and writers.
/// </summary>
internal sealed class HttpTarget(IPEndPoint endPoint, Stats stats, StressOptions options) : LoadTarget(endPoint, stats, options)
{
    private static readonly string[] s_paths = ["/plaintext", "/json", "/missing"];
    private static readonly byte[] s_plaintext = "Hello, World!"u8.ToArray();
    private static readonly byte[] s_json = """{"message":"Hello, World!"}"""u8.ToArray();

    public override string Name => "http";

    public override IReadOnlyList<(string Kind, int Weight)> Scenarios { get; } =
    [
        ("plain", 30),        // one request at a time, keep-alive
        ("pipelined", 35),    // 2-32 requests in one write, responses read and checked in order
        ("reset", 15),        // RST after sending a pipeline, having read only part of the answers
        ("slow-reader", 10),  // reads responses a few bytes at a time
        ("slow-writer", 10),  // dribbles request bytes with pauses
    ];

    public override Task RunScenarioAsync(string kind, Random random, CancellationToken cancellationToken)
        => RunConnectionAsync(kind, async (socket, id, ct) =>
        {
            var reader = new ResponseReader(socket, slow: kind == "slow-reader" ? random : null);
            int rounds = kind switch { "plain" => random.Next(1, 101), "slow-writer" => random.Next(1, 4), "slow-reader" => random.Next(1, 4), _ => random.Next(1, 31) };
            int resetRound = kind == "reset" ? random.Next(rounds) : -1;
            for (int round = 0; round < rounds; round++)
            {
                int depth = kind == "plain" ? 1 : random.Next(2, 33);
                int[] which = new int[depth];
                var requests = new StringBuilder();
                for (int i = 0; i < depth; i++)
                {
                    which[i] = random.Next(s_paths.Length);
                    requests.Append(CultureInfo.InvariantCulture, $"GET {s_paths[which[i]]} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request: {id}-{round}-{i}\r\n\r\n");
                }

                byte[] bytes = Encoding.ASCII.GetBytes(requests.ToString());
                if (kind == "slow-writer")
                {
                    for (int offset = 0; offset < bytes.Length;)
                    {
                        int n = Math.Min(random.Next(1, 11), bytes.Length - offset);
                        await SendAllAsync(socket, bytes.AsMemory(offset, n), ct);
                        offset += n;
                        await Task.Delay(random.Next(0, 3), ct);
                    }
                }
                else
                {
                    await SendAllAsync(socket, bytes, ct);
                }

                Interlocked.Add(ref Stats.BytesSent, bytes.Length);
                int readBeforeReset = round == resetRound ? random.Next(depth) : depth;
                for (int i = 0; i < readBeforeReset; i++)
                {
                    await reader.ReadAndVerifyAsync(which[i], Stats, ct);
                }

                if (round == resetRound)
                {
                    Reset(socket);
                    Stats.Fault("client-reset");
                    return;
                }
            }

            if (kind is "slow-reader" or "slow-writer")
            {
                Stats.Fault(kind);
            }

            if (kind == "pipelined")
            {
                Stats.Fault("pipelines", rounds);
            }

            // Half-close; Kestrel answers the FIN with its own.
            socket.Shutdown(SocketShutdown.Send);
            await reader.ExpectEndAsync(ct);
        }, cancellationToken);

    protected override async Task StormConversationAsync(Socket socket, long id, Random random, CancellationToken cancellationToken)
    {
        int which = random.Next(s_paths.Length);
        await SendAllAsync(socket, Encoding.ASCII.GetBytes($"GET {s_paths[which]} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), cancellationToken);
        var reader = new ResponseReader(socket, slow: null);
        await reader.ReadAndVerifyAsync(which, Stats, cancellationToken);
        socket.Shutdown(SocketShutdown.Send);
        await reader.ExpectEndAsync(cancellationToken);
    }

    protected override async Task PingAsync(HeldConnection held, Random random, CancellationToken cancellationToken)
    {
        int which = random.Next(s_paths.Length);
        await SendAllAsync(held.Socket, Encoding.ASCII.GetBytes($"GET {s_paths[which]} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), cancellationToken);
        // Each ping reads its whole response, so a fresh reader never loses buffered bytes.
        await new ResponseReader(held.Socket, slow: null).ReadAndVerifyAsync(which, Stats, cancellationToken);
    }

    protected override async Task CloseHeldAsync(HeldConnection held, CancellationToken cancellationToken)
    {
        held.Socket.Shutdown(SocketShutdown.Send);
        await new ResponseReader(held.Socket, slow: null).ExpectEndAsync(cancellationToken);
    }

    public override async Task<bool> FreshConnectionWorksAsync(CancellationToken cancellationToken)
    {
        using Socket socket = await ConnectAsync(EndPoint, cancellationToken);
        var reader = new ResponseReader(socket, slow: null);
        var stats = new Stats();
        for (int which = 0; which < s_paths.Length; which++)
        {
            await SendAllAsync(socket, Encoding.ASCII.GetBytes($"GET {s_paths[which]} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), cancellationToken);
            await reader.ReadAndVerifyAsync(which, stats, cancellationToken);
        }

        return stats.RequestsVerified == s_paths.Length;
    }

    /// <summary>Reads HTTP/1.1 responses framed by Content-Length from one socket, keeping what it over-read.</summary>
    private sealed class ResponseReader(Socket socket, Random? slow)
    {
        private readonly byte[] _buffer = new byte[16 * 1024];
        private int _start;
        private int _end;

        public async Task ReadAndVerifyAsync(int which, Stats stats, CancellationToken cancellationToken)
        {
            int headerEnd;
            while ((headerEnd = _buffer.AsSpan(_start, _end - _start).IndexOf("\r\n\r\n"u8)) < 0)
            {
                await FillAsync(cancellationToken);
            }

            string head = Encoding.ASCII.GetString(_buffer, _start, headerEnd);
            _start += headerEnd + 4;
            string[] lines = head.Split("\r\n");
            int expectedStatus = which == 2 ? 404 : 200;
            if (!lines[0].StartsWith($"HTTP/1.1 {expectedStatus} ", StringComparison.Ordinal))
            {
                throw new InvalidDataException($"Expected status {expectedStatus} for {s_paths[which]}, got '{lines[0]}'.");
            }

            int contentLength = -1;
            foreach (string line in lines.AsSpan(1))
            {
                if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
                {
                    contentLength = int.Parse(line.AsSpan(15).Trim(), CultureInfo.InvariantCulture);
                }
            }

            byte[] expected = which switch { 0 => s_plaintext, 1 => s_json, _ => [] };
            if (contentLength != expected.Length)
            {
                throw new InvalidDataException($"Expected Content-Length {expected.Length} for {s_paths[which]}, got {contentLength}: '{head}'.");
            }

            while (_end - _start < contentLength)
            {
                await FillAsync(cancellationToken);
            }

            if (!_buffer.AsSpan(_start, contentLength).SequenceEqual(expected))
            {
                throw new InvalidDataException($"Wrong body for {s_paths[which]}: '{Encoding.ASCII.GetString(_buffer, _start, contentLength)}'.");
            }

            _start += contentLength;
            Interlocked.Increment(ref stats.RequestsVerified);
            Interlocked.Add(ref stats.BytesVerified, headerEnd + 4 + contentLength);
        }

        public async Task ExpectEndAsync(CancellationToken cancellationToken)
        {
            if (_end > _start || await ReceiveAsync(_buffer.AsMemory(), cancellationToken) != 0)
            {
                throw new InvalidDataException("Bytes after the last response.");
            }
        }

        private async Task FillAsync(CancellationToken cancellationToken)
        {
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            int max = slow is null ? _buffer.Length - _end : Math.Min(slow.Next(1, 65), _buffer.Length - _end);
            int n = await ReceiveAsync(_buffer.AsMemory(_end, max), cancellationToken);
            if (n == 0)
            {
                throw new IOException("The server closed the connection inside a response.");
            }

            _end += n;
            if (slow is not null)
            {
                await Task.Delay(slow.Next(0, 3), cancellationToken);
            }
        }

        private ValueTask<int> ReceiveAsync(Memory<byte> memory, CancellationToken cancellationToken)
            => socket.ReceiveAsync(memory, SocketFlags.None, cancellationToken);
    }
}
