using System.Buffers;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>Placeholder while the engine lands.</summary>
internal sealed class ReactorGroup : IAsyncDisposable
{
    public ReactorGroup(IoUringTransportOptions options, IMemoryPoolFactory<byte>? memoryPoolFactory, ILoggerFactory loggerFactory)
    {
        _ = options; _ = memoryPoolFactory; _ = loggerFactory;
    }

    public int Count => 0;

    public void Start() => throw new NotImplementedException();

    public string DescribeFeatures() => string.Empty;

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
