using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>The connection's features: the ones it implements itself, and any others Kestrel or middleware set.</summary>
internal sealed partial class IoUringConnection :
    IConnectionIdFeature,
    IConnectionTransportFeature,
    IConnectionItemsFeature,
    IMemoryPoolFeature,
    IConnectionLifetimeFeature,
    IConnectionEndPointFeature
{
    private static long s_lastConnectionId = DateTime.UtcNow.Ticks;
    private readonly FeatureCollection _features;
    private string? _connectionId;
    private IDictionary<object, object?>? _items;

    private void InitializeFeatures()
    {
        _features.Set<IConnectionIdFeature>(this);
        _features.Set<IConnectionTransportFeature>(this);
        _features.Set<IConnectionItemsFeature>(this);
        _features.Set<IMemoryPoolFeature>(this);
        _features.Set<IConnectionLifetimeFeature>(this);
        _features.Set<IConnectionEndPointFeature>(this);
    }

    public override IFeatureCollection Features => _features;

    public override string ConnectionId
    {
        get => _connectionId ??= NextConnectionId();
        set => _connectionId = value;
    }

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new Dictionary<object, object?>();
        set => _items = value;
    }

    public override IDuplexPipe Transport { get; set; }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    public override CancellationToken ConnectionClosed { get; set; }

    MemoryPool<byte> IMemoryPoolFeature.MemoryPool => _pool;

    void IConnectionLifetimeFeature.Abort()
        => Abort(new ConnectionAbortedException("The connection was aborted by the application via IConnectionLifetimeFeature.Abort()."));

    /// <summary>A 13-character base32 id, unique in the process, in the style of Kestrel's connection ids.</summary>
    private static string NextConnectionId()
    {
        long id = Interlocked.Increment(ref s_lastConnectionId);
        return string.Create(13, id, static (buffer, value) =>
        {
            const string Encode32 = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
            for (int i = 12; i >= 0; i--)
            {
                buffer[i] = Encode32[(int)(value & 31)];
                value >>= 5;
            }
        });
    }

    /// <summary>Graceful close: completes the application's ends, sends what is buffered, FIN, waits for both directions. Idempotent.</summary>
#pragma warning disable CA2215 // ConnectionContext.DisposeAsync does nothing; this is the whole disposal.
    public override ValueTask DisposeAsync()
#pragma warning restore CA2215
    {
        lock (_closed)
        {
            _disposeTask ??= DisposeCoreAsync();
        }

        return new ValueTask(_disposeTask);
    }

    private async Task DisposeCoreAsync()
    {
        _originalTransport.Input.Complete();
        _originalTransport.Output.Complete();
        await _closed.Task.ConfigureAwait(false);
        await _connectionClosedFired.Task.ConfigureAwait(false);
        _connectionClosedTokenSource.Dispose();
    }
}
