using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>A parsed HTTP/1.1 response.</summary>
public sealed record RawResponse(int StatusCode, string StatusLine, IReadOnlyList<KeyValuePair<string, string>> Headers, byte[] Body)
{
    public string BodyText => Encoding.UTF8.GetString(Body);

    public string? Header(string name) => Headers.LastOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
}

/// <summary>
/// A client socket with exact control over bytes, FIN and RST, and a small buffered HTTP/1.1 response
/// reader. Every receive is bounded by <see cref="Timeouts.Step"/>.
/// </summary>
public sealed class RawConnection : IAsyncDisposable
{
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawConnection(Socket socket) => Socket = socket;

    public Socket Socket { get; }

    public static async Task<RawConnection> ConnectAsync(EndPoint endPoint, Action<Socket>? configure = null)
    {
        var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            configure?.Invoke(socket);
            await socket.ConnectAsync(endPoint).WaitAsync(Timeouts.Step);
            return new RawConnection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public Task SendAsync(string text) => SendAsync(Encoding.ASCII.GetBytes(text));

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            int sent = await Socket.SendAsync(bytes, SocketFlags.None).AsTask().WaitAsync(Timeouts.Step);
            bytes = bytes[sent..];
        }
    }

    /// <summary>Receives into <paramref name="destination"/>, first from what is already buffered; 0 means FIN.</summary>
    public async Task<int> ReceiveAsync(Memory<byte> destination, TimeSpan? timeout = null)
    {
        if (_end > _start)
        {
            int n = Math.Min(destination.Length, _end - _start);
            _buffer.AsMemory(_start, n).CopyTo(destination);
            _start += n;
            return n;
        }

        return await Socket.ReceiveAsync(destination, SocketFlags.None).AsTask().WaitAsync(timeout ?? Timeouts.Step);
    }

    /// <summary>Reads one response: status line, headers, then a body framed by Content-Length, chunked encoding, or the close.</summary>
    public async Task<RawResponse> ReadResponseAsync()
    {
        string statusLine = await ReadLineAsync() ?? throw new IOException("The server closed the connection before sending a response.");
        string[] parts = statusLine.Split(' ', 3);
        if (parts.Length < 2 || !parts[0].StartsWith("HTTP/1.", StringComparison.Ordinal) || !int.TryParse(parts[1], out int status))
        {
            throw new InvalidDataException($"Not an HTTP/1.x status line: '{statusLine}'");
        }

        var headers = new List<KeyValuePair<string, string>>();
        while (true)
        {
            string line = await ReadLineAsync() ?? throw new IOException("The server closed the connection inside the response headers.");
            if (line.Length == 0)
            {
                break;
            }

            int colon = line.IndexOf(':', StringComparison.Ordinal);
            headers.Add(new(line[..colon].Trim(), line[(colon + 1)..].Trim()));
        }

        var response = new RawResponse(status, statusLine, headers, []);
        byte[] body;
        if (status is 100 or 101 or 204 or 304)
        {
            body = [];
        }
        else if (response.Header("Content-Length") is { } length)
        {
            body = await ReadExactlyAsync(int.Parse(length));
        }
        else if (string.Equals(response.Header("Transfer-Encoding"), "chunked", StringComparison.OrdinalIgnoreCase))
        {
            body = await ReadChunkedAsync();
        }
        else
        {
            body = await ReadToEndAsync();
        }

        return response with { Body = body };
    }

    /// <summary>Reads a CRLF-terminated line; null on FIN before any byte of it.</summary>
    public async Task<string?> ReadLineAsync()
    {
        var line = new StringBuilder();
        while (true)
        {
            if (_start == _end && !await FillAsync())
            {
                return line.Length == 0 ? null : throw new IOException("The server closed the connection mid-line.");
            }

            int newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            int stop = newline < 0 ? _end : newline;
            line.Append(Encoding.ASCII.GetString(_buffer, _start, stop - _start));
            _start = newline < 0 ? _end : newline + 1;
            if (newline >= 0)
            {
                return line.ToString().TrimEnd('\r');
            }
        }
    }

    public async Task<byte[]> ReadExactlyAsync(int count)
    {
        byte[] result = new byte[count];
        int read = 0;
        while (read < count)
        {
            int n = await ReceiveAsync(result.AsMemory(read));
            if (n == 0)
            {
                throw new IOException($"The server closed the connection after {read} of {count} body bytes.");
            }

            read += n;
        }

        return result;
    }

    /// <summary>Reads until the server's FIN.</summary>
    public async Task<byte[]> ReadToEndAsync()
    {
        var body = new MemoryStream();
        byte[] chunk = new byte[16 * 1024];
        int n;
        while ((n = await ReceiveAsync(chunk)) != 0)
        {
            body.Write(chunk, 0, n);
        }

        return body.ToArray();
    }

    private async Task<byte[]> ReadChunkedAsync()
    {
        var body = new MemoryStream();
        while (true)
        {
            string sizeLine = await ReadLineAsync() ?? throw new IOException("The server closed the connection inside a chunked body.");
            int size = Convert.ToInt32(sizeLine.Split(';')[0].Trim(), 16);
            if (size == 0)
            {
                // Trailers, then the empty line.
                while (!string.IsNullOrEmpty(await ReadLineAsync()))
                {
                }

                return body.ToArray();
            }

            body.Write(await ReadExactlyAsync(size));
            if (await ReadLineAsync() != string.Empty)
            {
                throw new InvalidDataException("A chunk was not followed by CRLF.");
            }
        }
    }

    private async Task<bool> FillAsync()
    {
        _start = 0;
        _end = await Socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None).AsTask().WaitAsync(Timeouts.Step);
        return _end != 0;
    }

    /// <summary>Half-closes: sends FIN, keeps receiving.</summary>
    public void ShutdownSend() => Socket.Shutdown(SocketShutdown.Send);

    /// <summary>Closes abortively: SO_LINGER 0 makes the kernel send RST instead of FIN.</summary>
    public void Reset()
    {
        Socket.LingerState = new LingerOption(true, 0);
        Socket.Close();
    }

    public ValueTask DisposeAsync()
    {
        Socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
