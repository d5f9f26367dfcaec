using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>Placeholder while the engine lands.</summary>
internal sealed class IoUringConnectionListener : IConnectionListener
{
    public IoUringConnectionListener(EndPoint endpoint, IoUringTransportOptions options, ReactorGroup reactors, ILogger logger)
    {
        EndPoint = endpoint; _ = options; _ = reactors; _ = logger;
    }

    public EndPoint EndPoint { get; }

    public void Bind() => throw new NotImplementedException();

    public ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default) => throw new NotImplementedException();

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
