using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// Kestrel's response body feature with SendFileAsync served by <see cref="RingFileSender"/>; everything
/// else is forwarded unchanged, so Kestrel keeps all framing and Content-Length accounting.
/// </summary>
internal sealed class RingResponseBodyFeature(HttpContext context, IHttpResponseBodyFeature inner, IIoUringConnectionFeature connection, RingFileSender sender) : IHttpResponseBodyFeature
{
    /// <summary>Kestrel's feature this one forwards to.</summary>
    public IHttpResponseBodyFeature Inner => inner;

    /// <summary>The request this wrapper was made for (Kestrel reuses it across an HTTP/1.1 connection's requests).</summary>
    public HttpContext Context => context;

    public Stream Stream => inner.Stream;

    public PipeWriter Writer => inner.Writer;

    public void DisableBuffering() => inner.DisableBuffering();

    public Task StartAsync(CancellationToken cancellationToken = default) => inner.StartAsync(cancellationToken);

    public Task CompleteAsync() => inner.CompleteAsync();

    public Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default)
        => sender.SendFileAsync(context, inner, connection, path, offset, count, cancellationToken);
}
