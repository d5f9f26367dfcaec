using System.Net;
using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using Kestrel.Transport.IoUring.Ring;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Tests that touch process-wide state (environment variables, fd and thread counts) run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialCollection
{
    public const string Name = "Serial (process-wide state)";
}

internal static class RingTestHelpers
{
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Runs <paramref name="body"/> on a new thread and fails if it has not finished within
    /// <paramref name="timeout"/>. Raw rings are single-issuer: the body creates, uses and disposes its
    /// ring on that one thread, and a ring bug that spins or blocks fails the test instead of hanging it.
    /// </summary>
    public static void RunOnOwnThread(Action body, TimeSpan? timeout = null)
    {
        TimeSpan limit = timeout ?? Bound;
        ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                body();
            }
            catch (Exception e)
            {
                error = ExceptionDispatchInfo.Capture(e);
            }
        })
        {
            IsBackground = true,
            Name = "ring test",
        };
        thread.Start();
        if (!thread.Join(limit))
        {
            Assert.Fail($"The ring test body did not finish within {limit} (a hang or a lost completion).");
        }

        error?.Throw();
    }

    /// <summary>Runs <paramref name="func"/> on the reactor thread and returns its result, bounded.</summary>
    public static async Task<T> OnReactor<T>(Reactor reactor, Func<T> func)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        reactor.Schedule(_ =>
        {
            try
            {
                tcs.SetResult(func());
            }
            catch (Exception e)
            {
                tcs.SetException(e);
            }
        }, null);
        return await tcs.Task.WaitAsync(Bound);
    }

    public static Task OnReactor(Reactor reactor, Action action)
        => OnReactor(reactor, () =>
        {
            action();
            return true;
        });

    /// <summary>Polls <paramref name="condition"/> on the reactor thread until it holds; fails after the bound.</summary>
    public static async Task WaitOnReactor(Reactor reactor, Func<bool> condition, string what)
    {
        DateTime deadline = DateTime.UtcNow + Bound;
        while (!await OnReactor(reactor, condition))
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Timed out after {Bound} waiting for: {what}");
            }

            await Task.Delay(5);
        }
    }

    public static Reactor StartReactor(ReactorOptions? options = null)
    {
        var reactor = new Reactor(options ?? SmallReactorOptions(), 0);
        reactor.Start();
        return reactor;
    }

    public static ReactorOptions SmallReactorOptions(int receiveBuffers = 0) => new()
    {
        Ring = new RingOptions { SqEntries = 64, CqEntries = 256 },
        ReceiveBufferCount = receiveBuffers,
        ReceiveBufferSize = 4096,
    };

    /// <summary>Stops the reactor, failing the test if it does not stop within the bound.</summary>
    public static async Task StopBounded(Reactor reactor)
        => await reactor.StopAsync().WaitAsync(Bound);

    /// <summary>A connected loopback TCP pair: (server side, client side).</summary>
    public static (Socket Server, Socket Client) LoopbackPair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.Connect(listener.LocalEndPoint!);
        Socket server = listener.Accept();
        return (server, client);
    }

    public static int Fd(Socket socket) => (int)socket.SafeHandle.DangerousGetHandle();

    public static byte[] Pattern(int length)
    {
        byte[] data = new byte[length];
        for (int i = 0; i < length; i++)
        {
            data[i] = (byte)((i * 7) % 251);
        }

        return data;
    }
}

/// <summary>A ring owner that records what the reactor tells it. All members are used on the reactor thread.</summary>
internal sealed class RecordingOwner : IRingOwner
{
    public List<(byte Kind, int Result, uint Flags)> Completions { get; } = [];
    public List<Exception> HandlerExceptions { get; } = [];
    public int StoppingCalls { get; private set; }

    /// <summary>Runs inside OnCompletion; may throw to exercise the reactor's isolation of owners.</summary>
    public Action<byte, int, uint>? OnCompletionHook { get; set; }

    /// <summary>Runs inside OnHandlerException; may throw.</summary>
    public Action<Exception>? OnHandlerExceptionHook { get; set; }

    public void OnCompletion(byte kind, int result, uint flags)
    {
        Completions.Add((kind, result, flags));
        OnCompletionHook?.Invoke(kind, result, flags);
    }

    public void OnHandlerException(Exception exception)
    {
        HandlerExceptions.Add(exception);
        OnHandlerExceptionHook?.Invoke(exception);
    }

    public void OnReactorStopping() => StoppingCalls++;
}
