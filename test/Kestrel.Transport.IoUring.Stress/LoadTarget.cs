using System.Net;
using System.Net.Sockets;

namespace Kestrel.Transport.IoUring.Stress;

/// <summary>A connection kept open for the whole load phase and used now and then.</summary>
internal sealed class HeldConnection(Socket socket, long id, ulong seed) : IDisposable
{
    public Socket Socket { get; } = socket;

    public long Id { get; } = id;

    public ulong Seed { get; } = seed;

    /// <summary>Echo: bytes of the connection's stream sent and verified so far.</summary>
    public long Offset { get; set; }

    public SemaphoreSlim Lock { get; } = new(1, 1);

    public void Dispose()
    {
        Socket.Dispose();
        Lock.Dispose();
    }
}

/// <summary>
/// What one server under test is driven with. Subclasses define the conversations (echo, HTTP);
/// this class keeps the common shape: a connection per scenario with a hard deadline, connection
/// storms, and a pool of held connections.
/// </summary>
internal abstract class LoadTarget(IPEndPoint endPoint, Stats stats, StressOptions options)
{
    /// <summary>No single connection may take longer: one that does is stuck, and that is an error.</summary>
    protected static readonly TimeSpan ConnectionDeadline = TimeSpan.FromSeconds(90);

    private long _nextId;

    protected IPEndPoint EndPoint { get; } = endPoint;

    protected Stats Stats { get; } = stats;

    protected StressOptions Options { get; } = options;

    public abstract string Name { get; }

    /// <summary>The scenario kinds the chaos workers pick from, with weights.</summary>
    public abstract IReadOnlyList<(string Kind, int Weight)> Scenarios { get; }

    protected long NextId() => Interlocked.Increment(ref _nextId);

    protected ulong SeedFor(long id) => Pattern.SeedFor(Options.Seed, id);

    /// <summary>One connection of the given kind; verifies everything it receives.</summary>
    public abstract Task RunScenarioAsync(string kind, Random random, CancellationToken cancellationToken);

    /// <summary>One short conversation on a connection of its own; the storm runs thousands at once.</summary>
    protected abstract Task StormConversationAsync(Socket socket, long id, Random random, CancellationToken cancellationToken);

    /// <summary>A short verified exchange on a held connection.</summary>
    protected abstract Task PingAsync(HeldConnection held, Random random, CancellationToken cancellationToken);

    /// <summary>Ends a held connection cleanly (half-close, expect the server's FIN).</summary>
    protected abstract Task CloseHeldAsync(HeldConnection held, CancellationToken cancellationToken);

    public static async Task<Socket> ConnectAsync(IPEndPoint endPoint, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endPoint, cancellationToken);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Runs <paramref name="body"/> on a fresh connection, bounded by <see cref="ConnectionDeadline"/>; failures are counted as errors.</summary>
    protected async Task RunConnectionAsync(string kind, Func<Socket, long, CancellationToken, Task> body, CancellationToken cancellationToken)
    {
        long id = NextId();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(ConnectionDeadline);
        Stats.Opened();
        bool completed = false;
        try
        {
            using Socket socket = await ConnectAsync(EndPoint, deadline.Token);
            await body(socket, id, deadline.Token);
            completed = true;
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            Stats.Error($"{Name} connection {id} ({kind}): not finished after {ConnectionDeadline.TotalSeconds:0} s (stuck)");
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            Stats.Error($"{Name} connection {id} ({kind}): still running when the run was cancelled");
        }
        catch (Exception e)
        {
            Stats.Error($"{Name} connection {id} ({kind}): {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            Stats.Closed(completed);
        }
    }

    /// <summary><paramref name="count"/> connects at once (far more than the listen backlog), each with one short verified conversation.</summary>
    public async Task StormAsync(int count, ulong stormSeed, CancellationToken cancellationToken)
    {
        var tasks = new Task[count];
        for (int i = 0; i < count; i++)
        {
            var random = new Random((int)(stormSeed + (ulong)i));
            tasks[i] = RunConnectionAsync("storm", (socket, id, ct) => StormConversationAsync(socket, id, random, ct), cancellationToken);
        }

        await Task.WhenAll(tasks);
        Stats.Fault("storms");
        Stats.Fault("storm-connects", count);
    }

    /// <summary>Opens <paramref name="count"/> connections (a few hundred connecting at a time) and keeps them open.</summary>
    public async Task<List<HeldConnection>> OpenHeldAsync(int count, CancellationToken cancellationToken)
    {
        var held = new List<HeldConnection>(count);
        using var gate = new SemaphoreSlim(256);
        var tasks = new List<Task>(count);
        for (int i = 0; i < count; i++)
        {
            await gate.WaitAsync(cancellationToken);
            tasks.Add(Task.Run(async () =>
            {
                long id = NextId();
                try
                {
                    using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    deadline.CancelAfter(ConnectionDeadline);
                    Socket socket = await ConnectAsync(EndPoint, deadline.Token);
                    var connection = new HeldConnection(socket, id, SeedFor(id));
                    Stats.Opened();
                    lock (held)
                    {
                        held.Add(connection);
                    }

                    await PingAsync(connection, new Random((int)id), deadline.Token);
                }
                catch (Exception e)
                {
                    Stats.Error($"{Name} held connection {id}: open failed: {e.GetType().Name}: {e.Message}");
                }
                finally
                {
                    gate.Release();
                }
            }, cancellationToken));
        }

        await Task.WhenAll(tasks);
        return held;
    }

    /// <summary>Uses random held connections until <paramref name="until"/>, so they stay live under load.</summary>
    public async Task PingHeldAsync(List<HeldConnection> held, DateTime until, int seed, CancellationToken cancellationToken)
    {
        var random = new Random(seed);
        while (DateTime.UtcNow < until && held.Count > 0 && !cancellationToken.IsCancellationRequested)
        {
            HeldConnection connection = held[random.Next(held.Count)];
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(ConnectionDeadline);
            await connection.Lock.WaitAsync(deadline.Token);
            try
            {
                await PingAsync(connection, random, deadline.Token);
            }
            catch (Exception e)
            {
                Stats.Error($"{Name} held connection {connection.Id}: ping failed: {e.GetType().Name}: {e.Message}");
            }
            finally
            {
                connection.Lock.Release();
            }

            await Task.Delay(random.Next(0, 5), cancellationToken);
        }
    }

    /// <summary>Closes every held connection cleanly, checking the server ends each too.</summary>
    public async Task CloseAllHeldAsync(List<HeldConnection> held, CancellationToken cancellationToken)
    {
        await Parallel.ForEachAsync(held, new ParallelOptions { MaxDegreeOfParallelism = 64, CancellationToken = cancellationToken }, async (connection, ct) =>
        {
            bool completed = false;
            try
            {
                using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
                deadline.CancelAfter(ConnectionDeadline);
                await CloseHeldAsync(connection, deadline.Token);
                completed = true;
            }
            catch (Exception e)
            {
                Stats.Error($"{Name} held connection {connection.Id}: close failed: {e.GetType().Name}: {e.Message}");
            }
            finally
            {
                connection.Dispose();
                Stats.Closed(completed);
            }
        });
    }

    /// <summary>A brand-new connection after the load: proves the server still serves.</summary>
    public abstract Task<bool> FreshConnectionWorksAsync(CancellationToken cancellationToken);

    /// <summary>Sends all of <paramref name="data"/>.</summary>
    protected static async Task SendAllAsync(Socket socket, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        while (!data.IsEmpty)
        {
            int sent = await socket.SendAsync(data, SocketFlags.None, cancellationToken);
            data = data[sent..];
        }
    }

    /// <summary>Closes abortively: SO_LINGER 0 makes the close send RST.</summary>
    protected static void Reset(Socket socket)
    {
        socket.LingerState = new LingerOption(true, 0);
        socket.Close();
    }
}
