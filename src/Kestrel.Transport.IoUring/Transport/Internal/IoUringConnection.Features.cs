using System.Buffers;
using System.Collections;
using System.IO.Pipelines;
using System.Net;
using Kestrel.Transport.IoUring.Ring;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Win32.SafeHandles;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// The connection is its own feature collection: the features it implements are answered without a
/// lookup, and the few others Kestrel and middleware set (any type) go to a small list, which costs far
/// less per idle connection than a dictionary.
/// </summary>
internal sealed partial class IoUringConnection :
    IFeatureCollection,
    IConnectionIdFeature,
    IConnectionTransportFeature,
    IConnectionItemsFeature,
    IMemoryPoolFeature,
    IConnectionLifetimeFeature,
    IConnectionEndPointFeature,
    IIoUringConnectionFeature
{
    private static long s_lastConnectionId = DateTime.UtcNow.Ticks;
    private List<KeyValuePair<Type, object?>>? _extraFeatures;
    private int _featureRevision;
    private string? _connectionId;
    private IDictionary<object, object?>? _items;

    public override IFeatureCollection Features => this;

    bool IFeatureCollection.IsReadOnly => false;

    int IFeatureCollection.Revision => _featureRevision;

    object? IFeatureCollection.this[Type key]
    {
        get
        {
            ArgumentNullException.ThrowIfNull(key);
            List<KeyValuePair<Type, object?>>? extras = _extraFeatures;
            if (extras is not null)
            {
                foreach (KeyValuePair<Type, object?> pair in extras)
                {
                    if (pair.Key == key)
                    {
                        return pair.Value;
                    }
                }
            }

            return IsOwnFeature(key) ? this : null;
        }

        set
        {
            ArgumentNullException.ThrowIfNull(key);
            _featureRevision++;
            List<KeyValuePair<Type, object?>> extras = _extraFeatures ??= new List<KeyValuePair<Type, object?>>(6);
            for (int i = 0; i < extras.Count; i++)
            {
                if (extras[i].Key == key)
                {
                    if (value is null && !IsOwnFeature(key))
                    {
                        extras.RemoveAt(i);
                    }
                    else
                    {
                        extras[i] = new KeyValuePair<Type, object?>(key, value);
                    }

                    return;
                }
            }

            if (value is not null || IsOwnFeature(key))
            {
                // A null for one of our own features is kept, so that it hides the built-in answer.
                extras.Add(new KeyValuePair<Type, object?>(key, value));
            }
        }
    }

    TFeature? IFeatureCollection.Get<TFeature>() where TFeature : default
        => (TFeature?)((IFeatureCollection)this)[typeof(TFeature)];

    void IFeatureCollection.Set<TFeature>(TFeature? instance) where TFeature : default
        => ((IFeatureCollection)this)[typeof(TFeature)] = instance;

    private static bool IsOwnFeature(Type key)
        => key == typeof(IConnectionIdFeature)
        || key == typeof(IConnectionTransportFeature)
        || key == typeof(IConnectionItemsFeature)
        || key == typeof(IMemoryPoolFeature)
        || key == typeof(IConnectionLifetimeFeature)
        || key == typeof(IConnectionEndPointFeature)
        || key == typeof(IIoUringConnectionFeature);

    private static readonly Type[] s_ownFeatures =
    [
        typeof(IConnectionIdFeature),
        typeof(IConnectionTransportFeature),
        typeof(IConnectionItemsFeature),
        typeof(IMemoryPoolFeature),
        typeof(IConnectionLifetimeFeature),
        typeof(IConnectionEndPointFeature),
        typeof(IIoUringConnectionFeature),
    ];

    Reactor IIoUringConnectionFeature.Reactor => _reactor;

    PipeScheduler IIoUringConnectionFeature.ApplicationScheduler => _group.AppScheduler;

    object? IIoUringConnectionFeature.ResponseBodyFeatureCache { get; set; }

    bool IIoUringConnectionFeature.OwnsTransport => ReferenceEquals(Transport, _originalTransport);

    FileRegion? IIoUringConnectionFeature.TryBeginFileRegion(SafeFileHandle file, long offset, long length)
    {
        if (!_group.SplicePipes.TryRent(out SplicePipe? pipe))
        {
            return null;
        }

        FileRegion? region = _writer.TryBeginRegion(file, offset, length, pipe!);
        if (region is null)
        {
            // Never used: still empty.
            _group.SplicePipes.Return(pipe!, empty: true);
        }

        return region;
    }

    void IIoUringConnectionFeature.EndFileRegion(FileRegion region) => _writer.EndRegion(region);

    void IIoUringConnectionFeature.FailFileRegion(FileRegion region, string reason)
    {
        _writer.Poison();
        _writer.EndRegion(region);
        Abort(new ConnectionAbortedException(reason));
    }

    IEnumerator<KeyValuePair<Type, object>> IEnumerable<KeyValuePair<Type, object>>.GetEnumerator()
    {
        List<KeyValuePair<Type, object?>>? extras = _extraFeatures;
        foreach (Type own in s_ownFeatures)
        {
            object? value = this;
            if (extras is not null)
            {
                foreach (KeyValuePair<Type, object?> pair in extras)
                {
                    if (pair.Key == own)
                    {
                        value = pair.Value;
                    }
                }
            }

            if (value is not null)
            {
                yield return new KeyValuePair<Type, object>(own, value);
            }
        }

        if (extras is not null)
        {
            foreach (KeyValuePair<Type, object?> pair in extras)
            {
                if (pair.Value is not null && !IsOwnFeature(pair.Key))
                {
                    yield return new KeyValuePair<Type, object>(pair.Key, pair.Value);
                }
            }
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => ((IEnumerable<KeyValuePair<Type, object>>)this).GetEnumerator();

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
