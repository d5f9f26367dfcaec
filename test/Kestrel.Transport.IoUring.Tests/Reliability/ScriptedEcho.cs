using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Kestrel.Transport.IoUring.Tests.Reliability;

/// <summary>What the server does with one connection of <see cref="ScriptedEcho"/>.</summary>
public enum EchoRole
{
    /// <summary>Echo everything until the client's FIN.</summary>
    Echo = 0,

    /// <summary>Echo <c>stopAfter</c> bytes, then throw out of the connection handler.</summary>
    Throw = 1,

    /// <summary>Echo <c>stopAfter</c> bytes, then <see cref="ConnectionContext.Abort(ConnectionAbortedException)"/>.</summary>
    Abort = 2,
}

/// <summary>
/// A raw TCP echo run as Kestrel connection middleware (no HTTP), scripted per connection by a 16-byte
/// header the client sends first: id (8), role (4), stop-after byte count (4). Each client sends its own
/// stretch of <see cref="BytePattern"/> (starting at an offset derived from its id), so a byte from
/// another connection or a stale buffer shows up as a mismatch.
/// </summary>
public static class ScriptedEcho
{
    public const string ThrowMarker = "ScriptedEcho: this connection's handler throws on purpose.";
    private const int HeaderLength = 16;

    public static void Use(ListenOptions listen) => listen.Use(_ => RunAsync);

    /// <summary>Where connection <paramref name="id"/>'s bytes start in <see cref="BytePattern"/>: a prime stride keeps them apart.</summary>
    public static long PatternOffset(long id) => id * 1_000_003L;

    private static async Task RunAsync(ConnectionContext connection)
    {
        PipeReader input = connection.Transport.Input;
        PipeWriter output = connection.Transport.Output;
        try
        {
            ReadResult result = await input.ReadAtLeastAsync(HeaderLength);
            if (result.Buffer.Length < HeaderLength)
            {
                return;
            }

            byte[] header = result.Buffer.Slice(0, HeaderLength).ToArray();
            input.AdvanceTo(result.Buffer.GetPosition(HeaderLength));
            var role = (EchoRole)BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
            long stopAfter = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12));
            long echoed = 0;
            while (true)
            {
                result = await input.ReadAsync();
                ReadOnlySequence<byte> buffer = result.Buffer;
                if (role != EchoRole.Echo && echoed + buffer.Length >= stopAfter)
                {
                    foreach (ReadOnlyMemory<byte> segment in buffer.Slice(0, stopAfter - echoed))
                    {
                        output.Write(segment.Span);
                    }

                    input.AdvanceTo(buffer.End);
                    await output.FlushAsync();
                    if (role == EchoRole.Throw)
                    {
                        throw new InvalidOperationException(ThrowMarker);
                    }

                    connection.Abort(new ConnectionAbortedException("ScriptedEcho aborts this connection on purpose."));
                    return;
                }

                foreach (ReadOnlyMemory<byte> segment in buffer)
                {
                    output.Write(segment.Span);
                }

                echoed += buffer.Length;
                input.AdvanceTo(buffer.End);
                FlushResult flush = await output.FlushAsync();
                if (result.IsCompleted || flush.IsCompleted)
                {
                    return;
                }
            }
        }
        catch (ConnectionResetException)
        {
            // The client reset: nothing left to echo to.
        }
        catch (ConnectionAbortedException)
        {
            // Shutdown, or our own abort.
        }
    }

    /// <summary>What one client saw.</summary>
    public sealed record Outcome(long Id, EchoRole Role, long Size, long Received, bool ClientReset, bool EndedByServer, string? Error);

    /// <summary>
    /// One client: sends the header and <paramref name="size"/> pattern bytes while reading the echo
    /// concurrently, checking every byte. Role Echo: half-closes after sending and expects every byte,
    /// then FIN. Other roles: expects a verified prefix, then the server ending the connection.
    /// <paramref name="resetAt"/> &gt;= 0: the client resets (linger 0 + close) after sending that many bytes.
    /// </summary>
    public static async Task<Outcome> RunClientAsync(EndPoint endPoint, long id, EchoRole role, int stopAfter, long size, long resetAt = -1)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var deadline = new CancellationTokenSource(Timeouts.Bulk);
        await socket.ConnectAsync(endPoint, deadline.Token);
        long start = PatternOffset(id);
        bool resetSent = false;
        bool serverEnded = false;

        async Task WriteAsync()
        {
            byte[] header = new byte[HeaderLength];
            BinaryPrimitives.WriteInt64LittleEndian(header, id);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), (int)role);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(12), stopAfter);
            byte[] buffer = new byte[32 * 1024];
            var random = new Random((int)id);
            try
            {
                await socket.SendAsync(header, SocketFlags.None, deadline.Token);
                long end = resetAt >= 0 ? resetAt : size;
                for (long offset = 0; offset < end;)
                {
                    int n = (int)Math.Min(random.Next(1, buffer.Length + 1), end - offset);
                    BytePattern.Fill(buffer.AsSpan(0, n), start + offset);
                    for (int sent = 0; sent < n;)
                    {
                        sent += await socket.SendAsync(buffer.AsMemory(sent, n - sent), SocketFlags.None, deadline.Token);
                    }

                    offset += n;
                }

                if (resetAt >= 0)
                {
                    resetSent = true;
                    socket.LingerState = new LingerOption(true, 0);
                    socket.Close();
                    return;
                }

                socket.Shutdown(SocketShutdown.Send);
            }
            catch (SocketException) when (role != EchoRole.Echo)
            {
                // The server ended the connection while we were still sending: expected for this role.
                serverEnded = true;
            }
        }

        long received = 0;
        async Task ReadAsync()
        {
            byte[] buffer = new byte[64 * 1024];
            while (true)
            {
                int n;
                try
                {
                    n = await socket.ReceiveAsync(buffer, SocketFlags.None, deadline.Token);
                }
                catch (Exception) when (resetSent)
                {
                    return;
                }
                catch (SocketException) when (role != EchoRole.Echo)
                {
                    serverEnded = true;
                    return;
                }

                if (n == 0)
                {
                    serverEnded = true;
                    return;
                }

                long mismatch = BytePattern.FirstMismatch(buffer.AsSpan(0, n), start + received);
                if (mismatch >= 0)
                {
                    throw new InvalidDataException($"Connection {id}: echoed byte {mismatch - start} differs from what it sent.");
                }

                received += n;
            }
        }

        string? error = null;
        try
        {
            await Task.WhenAll(WriteAsync(), ReadAsync()).WaitAsync(Timeouts.Bulk);
        }
        catch (Exception e)
        {
            error = $"{e.GetType().Name}: {e.Message}";
        }

        return new Outcome(id, role, size, received, resetSent, serverEnded, error);
    }
}
