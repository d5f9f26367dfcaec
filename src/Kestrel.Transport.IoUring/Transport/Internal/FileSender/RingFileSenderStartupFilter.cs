using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// Puts the file sender's middleware first in the application's pipeline, so every later middleware
/// that sends files (StaticFiles, MapStaticAssets, Results.File, Response.SendFileAsync) uses it, and
/// body wrappers further in (ResponseCompression) wrap it and fall back on their own when they must.
/// </summary>
internal sealed class RingFileSenderStartupFilter(RingFileSender sender, bool enabled) : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        if (enabled)
        {
            app.Use(next => context => Invoke(context, next, sender));
        }

        next(app);
    };

    private static Task Invoke(HttpContext context, RequestDelegate next, RingFileSender sender)
    {
        // Absent on connections another transport serves (Sockets fallback, named pipes): nothing to do.
        IIoUringConnectionFeature? connection = context.Features.Get<IIoUringConnectionFeature>();
        IHttpResponseBodyFeature? body = connection is null ? null : context.Features.Get<IHttpResponseBodyFeature>();
        if (body is not null)
        {
            // One wrapper per connection while Kestrel keeps handing out the same feature and context
            // (HTTP/1.1 reuses both): no allocation per request. It holds nothing but those references,
            // so HTTP/2 streams replacing the cached one are safe. No restore needed: Kestrel resets its
            // request-level features for the next request.
            if (connection!.ResponseBodyFeatureCache is not RingResponseBodyFeature wrapper
                || !ReferenceEquals(wrapper.Inner, body) || !ReferenceEquals(wrapper.Context, context))
            {
                wrapper = new RingResponseBodyFeature(context, body, connection, sender);
                connection.ResponseBodyFeatureCache = wrapper;
            }

            context.Features.Set<IHttpResponseBodyFeature>(wrapper);
        }

        return next(context);
    }
}
