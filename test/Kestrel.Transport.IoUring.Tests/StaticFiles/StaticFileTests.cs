using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Kestrel.Transport.IoUring.Ring;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Transport.Internal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.ResponseCompression;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.FileProviders;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.StaticFiles;

/// <summary>
/// Files served through StaticFileMiddleware, Results.File and Response.SendFileAsync on both
/// transports: on io_uring they go through the ring file sender, Sockets is the reference.
/// </summary>
public class StaticFileTests(StaticFileFixture files, ITestOutputHelper output) : IClassFixture<StaticFileFixture>
{
    private static readonly Func<LogRecord, bool> ContentLengthMismatch =
        r => (r.Exception?.ToString() ?? r.Message).Contains("Content-Length mismatch", StringComparison.Ordinal);

    /// <summary>StaticFiles at /, plus /send/NAME (Response.SendFileAsync with ?offset, ?count, ?chunked) and /result/NAME (Results.File).</summary>
    private Action<WebApplication> App(Action<WebApplication>? before = null) => app =>
    {
        before?.Invoke(app);
        app.Use(async (context, next) =>
        {
            string path = context.Request.Path.Value ?? "";
            if (path.StartsWith("/send/", StringComparison.Ordinal))
            {
                string file = files.PathFor(path["/send/".Length..]);
                long offset = long.Parse(context.Request.Query["offset"].FirstOrDefault() ?? "0");
                long? count = context.Request.Query["count"].FirstOrDefault() is { } c ? long.Parse(c) : null;
                if (context.Request.Query["chunked"].Count == 0 && File.Exists(file))
                {
                    context.Response.ContentLength = count ?? new FileInfo(file).Length - offset;
                }

                try
                {
                    await context.Response.SendFileAsync(file, offset, count, context.RequestAborted);
                }
                catch (Exception e) when (!context.Response.HasStarted)
                {
                    context.Response.StatusCode = 500;
                    context.Response.ContentLength = null;
                    await context.Response.WriteAsync(e.GetType().Name);
                }

                return;
            }

            if (path.StartsWith("/result/", StringComparison.Ordinal))
            {
                await Results.File(files.PathFor(path["/result/".Length..]), "application/octet-stream").ExecuteAsync(context);
                return;
            }

            await next(context);
        });
        app.UseStaticFiles(new StaticFileOptions
        {
            FileProvider = new PhysicalFileProvider(files.Root),
            ServeUnknownFileTypes = true,
        });
    };

    private Task<TestHost> StartAsync(TransportKind transport, Action<WebApplication>? before = null, TestHostOptions? options = null)
        => TestHost.StartAsync(transport, App(before), options ?? new TestHostOptions { Output = output });

    private static FileSenderStats? Stats(TestHost host) => host.Services.GetService<RingFileSender>()?.Stats;

    private static async Task<string> HashOfAsync(HttpResponseMessage response)
    {
        await using Stream body = await response.Content.ReadAsStreamAsync();
        return Convert.ToHexString(await SHA256.HashDataAsync(body).AsTask().WaitAsync(Timeouts.Bulk));
    }

    private async Task AssertDownloadAsync(HttpClient client, Uri uri, string name, Version? version = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, uri) { Version = version ?? HttpVersion.Version11, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using HttpResponseMessage response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).WaitAsync(Timeouts.Step);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(version ?? HttpVersion.Version11, response.Version);
        Assert.Equal(new FileInfo(files.PathFor(name)).Length, response.Content.Headers.ContentLength);
        Assert.Equal(files.Hash(name), await HashOfAsync(response));
    }

    /// <summary>Waits (bounded) until every ring file reader has freed its buffers and closed its file.</summary>
    private static async Task AssertNoLiveReadersAsync()
    {
        DateTime deadline = DateTime.UtcNow + Timeouts.Settle;
        while (RingFileReader.LiveReaders != 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        Assert.Equal(0, RingFileReader.LiveReaders);
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_AllSizes_ByteExactTwice(TransportKind transport)
    {
        await using TestHost host = await StartAsync(transport);
        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            for (int round = 0; round < 2; round++)
            {
                foreach (long size in StaticFileFixture.Sizes)
                {
                    string name = StaticFileFixture.NameFor(size);
                    await AssertDownloadAsync(client, new Uri(host.BaseUri(), name), name);
                    await AssertDownloadAsync(client, new Uri(host.BaseUri(), "result/" + name), name);
                }
            }
        }

        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_LargeFile_ByteExact(TransportKind transport)
    {
        string name = files.Large;
        await using TestHost host = await StartAsync(transport);
        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            await AssertDownloadAsync(client, new Uri(host.BaseUri(), name), name);
        }

        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_Ranges_PartialContentWithExactBytes(TransportKind transport)
    {
        string name = StaticFileFixture.NameFor(1024 * 1024);
        byte[] content = files.Read(name);
        (long From, long? To)[] ranges = [(0, 0), (1, 4096), (4095, 4096), (65535, 65537), (65536, 65536 + 131072), (1000, null), (1024 * 1024 - 1, null), (123457, 987653)];
        await using TestHost host = await StartAsync(transport);
        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            foreach ((long from, long? to) in ranges)
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(host.BaseUri(), name));
                request.Headers.Range = new RangeHeaderValue(from, to);
                using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Timeouts.Step);
                Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
                long last = to ?? content.Length - 1;
                byte[] body = await response.Content.ReadAsByteArrayAsync().WaitAsync(Timeouts.Step);
                Assert.Equal(content.AsSpan((int)from, (int)(last - from + 1)).ToArray(), body);
            }

            // A suffix range (the last 500 bytes).
            using var suffix = new HttpRequestMessage(HttpMethod.Get, new Uri(host.BaseUri(), name));
            suffix.Headers.Range = new RangeHeaderValue(null, 500);
            using HttpResponseMessage suffixResponse = await client.SendAsync(suffix).WaitAsync(Timeouts.Step);
            Assert.Equal(HttpStatusCode.PartialContent, suffixResponse.StatusCode);
            Assert.Equal(content.AsSpan(content.Length - 500).ToArray(), await suffixResponse.Content.ReadAsByteArrayAsync().WaitAsync(Timeouts.Step));
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task SendFileAsync_OffsetCountAndChunked_ExactBytes(TransportKind transport)
    {
        string name = StaticFileFixture.NameFor(1024 * 1024);
        byte[] content = files.Read(name);
        await using TestHost host = await StartAsync(transport);
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            // Chunked (no Content-Length), then offsets and counts on the same keep-alive connection.
            await connection.SendAsync($"GET /send/{name}?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n");
            RawResponse chunked = await connection.ReadResponseAsync();
            Assert.Equal("chunked", chunked.Header("Transfer-Encoding"));
            Assert.Equal(content, chunked.Body);

            foreach ((long offset, long count) in new[] { (0L, 1L), (4095L, 4097L), (65536L, 200000L), (1024L * 1024 - 3, 3L), (17L, 0L) })
            {
                await connection.SendAsync($"GET /send/{name}?offset={offset}&count={count} HTTP/1.1\r\nHost: x\r\n\r\n");
                RawResponse response = await connection.ReadResponseAsync();
                Assert.Equal(200, response.StatusCode);
                Assert.Equal(content.AsSpan((int)offset, (int)count).ToArray(), response.Body);
            }
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task SendFileAsync_OffsetOrCountBeyondFile_ThrowsArgumentOutOfRange(TransportKind transport)
    {
        string name = StaticFileFixture.NameFor(4096);
        await using TestHost host = await StartAsync(transport);
        using (var client = new HttpClient { BaseAddress = host.BaseUri(), Timeout = Timeouts.Step })
        {
            foreach (string query in new[] { "offset=4097&count=0", "offset=-1&count=1", "offset=0&count=4097", "offset=4000&count=97" })
            {
                using HttpResponseMessage response = await client.GetAsync($"send/{name}?chunked=1&{query}");
                Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
                Assert.Equal(nameof(ArgumentOutOfRangeException), await response.Content.ReadAsStringAsync());
            }
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task SendFileAsync_MissingFileOrDirectory_ThrowsAsKestrelDoes(TransportKind transport)
    {
        await using TestHost host = await StartAsync(transport);
        using (var client = new HttpClient { BaseAddress = host.BaseUri(), Timeout = Timeouts.Step })
        {
            using HttpResponseMessage missing = await client.GetAsync("send/no-such-file.bin?chunked=1");
            Assert.Equal(HttpStatusCode.InternalServerError, missing.StatusCode);
            Assert.Equal(nameof(FileNotFoundException), await missing.Content.ReadAsStringAsync());

            // StaticFiles answers 404 for a missing file, as always.
            using HttpResponseMessage notFound = await client.GetAsync("no-such-file.bin");
            Assert.Equal(HttpStatusCode.NotFound, notFound.StatusCode);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_HttpsHttp11AndHttp2_ByteExact(TransportKind transport)
    {
        var options = new TestHostOptions
        {
            Output = output,
            ConfigureListen = listen =>
            {
                listen.Protocols = HttpProtocols.Http1AndHttp2;
                listen.UseHttps(new HttpsConnectionAdapterOptions { ServerCertificate = TestCertificate.Certificate });
            },
        };
        await using TestHost host = await StartAsync(transport, options: options);
        using (var client = new HttpClient(TestCertificate.CreateTrustingHandler()) { Timeout = Timeouts.Bulk })
        {
            foreach (Version version in new[] { HttpVersion.Version11, HttpVersion.Version20 })
            {
                foreach (long size in new long[] { 1, 4097, 64 * 1024 + 1, 1024 * 1024 })
                {
                    string name = StaticFileFixture.NameFor(size);
                    await AssertDownloadAsync(client, new Uri(host.BaseUri(https: true), name), name, version);
                }
            }
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_ManyConcurrentDownloads_ByteExact(TransportKind transport)
    {
        await using TestHost host = await StartAsync(transport);
        using (var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 32 }) { Timeout = Timeouts.Bulk })
        {
            string[] names = StaticFileFixture.Sizes.Select(StaticFileFixture.NameFor).ToArray();
            await Task.WhenAll(Enumerable.Range(0, 256).Select(i =>
                AssertDownloadAsync(client, new Uri(host.BaseUri(), names[i % names.Length]), names[i % names.Length]))).WaitAsync(Timeouts.Bulk);
        }

        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_FileChangedBetweenRequests_NeverStale(TransportKind transport)
    {
        string name = files.Create($"changing-{transport}.bin", 10_000, seed: 1);
        await files.WaitUntilCacheableAsync(name);
        await using TestHost host = await StartAsync(transport);
        using (var client = new HttpClient { Timeout = Timeouts.Step })
        {
            Uri uri = new(host.BaseUri(), name);
            await AssertDownloadAsync(client, uri, name);
            await AssertDownloadAsync(client, uri, name);
            if (Stats(host) is { } stats)
            {
                Assert.True(stats.CacheHits >= 1, "The unchanged small file should have been served from the cache.");
            }

            // Same size, different bytes, and the old modification time put back: only ctime tells.
            DateTime mtime = File.GetLastWriteTimeUtc(files.PathFor(name));
            files.Create(name, 10_000, seed: 2);
            File.SetLastWriteTimeUtc(files.PathFor(name), mtime);
            await AssertDownloadAsync(client, uri, name);

            // A different size.
            files.Create(name, 12_345, seed: 3);
            await AssertDownloadAsync(client, uri, name);

            // Cached again once old enough, then replaced by a new file (rename over it).
            await files.WaitUntilCacheableAsync(name);
            await AssertDownloadAsync(client, uri, name);
            await AssertDownloadAsync(client, uri, name);
            files.Create(name + ".new", 12_345, seed: 4);
            File.Move(files.PathFor(name + ".new"), files.PathFor(name), overwrite: true);
            await AssertDownloadAsync(client, uri, name);
        }

        await host.StopAndVerifyAsync();
    }

    public static TheoryData<TransportKind, bool> TruncationCases => new() { { TransportKind.Sockets, false }, { TransportKind.IoUring, false }, { TransportKind.IoUring, true } };

    [SkippableTheory]
    [MemberData(nameof(TruncationCases))]
    public async Task StaticFiles_FileTruncatedDuringSend_ConnectionEndsShortAndServerKeepsServing(TransportKind transport, bool zeroCopy)
    {
        const long Size = 64L * 1024 * 1024;
        string name = files.Create($"truncated-{transport}-{zeroCopy}.bin", Size, seed: 5);
        byte[] original = files.Read(name);
        var options = new TestHostOptions
        {
            Output = output,
            // Kestrel reports the short body (ring path); the transport reports the file ending under a splice (zero-copy).
            ExpectedLog = r => ContentLengthMismatch(r) || (r.Exception?.Message ?? "").Contains("ended before the length announced", StringComparison.Ordinal),
            ConfigureBuilder = builder => builder.Services.Configure<IoUringTransportOptions>(o => o.UseZeroCopyFileSend = zeroCopy),
        };
        await using TestHost host = await StartAsync(transport, options: options);
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint, s => s.ReceiveBufferSize = 64 * 1024))
        {
            await connection.SendAsync($"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.Equal("HTTP/1.1 200 OK", await connection.ReadLineAsync());
            long contentLength = -1;
            string? line;
            while (!string.IsNullOrEmpty(line = await connection.ReadLineAsync()))
            {
                if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
                {
                    contentLength = long.Parse(line["Content-Length:".Length..].Trim());
                }
            }

            Assert.Equal(Size, contentLength);
            byte[] first = new byte[1];
            Assert.Equal(1, await connection.ReceiveAsync(first));

            using (FileStream stream = new(files.PathFor(name), FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
            {
                stream.SetLength(1024 * 1024);
            }

            var received = new MemoryStream();
            received.Write(first);
            byte[] chunk = new byte[256 * 1024];
            try
            {
                int n;
                while ((n = await connection.ReceiveAsync(chunk, Timeouts.Bulk)) > 0)
                {
                    received.Write(chunk, 0, n);
                }
            }
            catch (System.Net.Sockets.SocketException)
            {
                // RST after the short body: the connection ended, which is what must happen.
            }

            byte[] body = received.ToArray();
            Assert.True(body.Length < Size, $"The whole {Size} bytes arrived although the file was truncated.");
            Assert.True(original.AsSpan(0, body.Length).SequenceEqual(body), "Bytes other than the file's original prefix arrived.");
        }

        if (transport == TransportKind.IoUring)
        {
            // A 64 MiB file is never cached: this went through the zero-copy path (splice hit end of file).
            // Counted before the next download, which may go zero-copy too (a file younger than the
            // cache's minimum age is not cached, and the fixture's files can be that young).
            Assert.Equal(zeroCopy ? 1 : 0, Stats(host)!.ZeroCopySends);
        }

        using (var client = new HttpClient { Timeout = Timeouts.Step })
        {
            await AssertDownloadAsync(client, new Uri(host.BaseUri(), StaticFileFixture.NameFor(4097)), StaticFileFixture.NameFor(4097));
        }

        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
        await AssertNoLivePipesAsync();
        File.Delete(files.PathFor(name));
    }

    // io_uring only: Kestrel's own SendFileAsync (the Sockets reference) opens files through FileStream,
    // which holds an advisory flock for as long as it sends, so an exclusive open fails there.
    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task RingFileSender_FileBeingSent_WriterCanOpenItExclusively(bool zeroCopy)
    {
        const long Size = 8L * 1024 * 1024;
        string name = files.Create($"held-{zeroCopy}.bin", Size, seed: 9);
        byte[] expected = files.Read(name);
        var options = new TestHostOptions
        {
            Output = output,
            ConfigureBuilder = builder => builder.Services.Configure<IoUringTransportOptions>(o => o.UseZeroCopyFileSend = zeroCopy),
        };
        await using TestHost host = await StartAsync(TransportKind.IoUring, options: options);
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint, s => s.ReceiveBufferSize = 64 * 1024))
        {
            await connection.SendAsync($"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.Equal("HTTP/1.1 200 OK", await connection.ReadLineAsync());
            while (!string.IsNullOrEmpty(await connection.ReadLineAsync()))
            {
            }

            byte[] head = await connection.ReadExactlyAsync(64 * 1024);

            // The sender holds the file open now (the client reads slowly); an exclusive open, as
            // File.Create does, must not see a lock from it. Opened without truncating: the bytes stay.
            using (FileStream exclusive = File.Open(files.PathFor(name), FileMode.Open, FileAccess.ReadWrite, FileShare.None))
            {
                Assert.Equal(Size, exclusive.Length);
            }

            byte[] rest = await connection.ReadExactlyAsync((int)(Size - head.Length));
            Assert.Equal(expected, head.Concat(rest).ToArray());
        }

        FileSenderStats stats = Stats(host)!;
        Assert.Equal(zeroCopy ? 1 : 0, stats.ZeroCopySends);
        Assert.Equal(zeroCopy ? 0 : 1, stats.RingSends);
        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
        await AssertNoLivePipesAsync();
        File.Delete(files.PathFor(name));
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_ClientResetsMidDownload_NothingLeaks(TransportKind transport)
    {
        await using TestHost host = await StartAsync(transport, options: new TestHostOptions { Output = output, ExpectedLog = _ => true });
        for (int i = 0; i < 4; i++)
        {
            await using RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint, s => s.ReceiveBufferSize = 64 * 1024);
            await connection.SendAsync($"GET /{files.Large} HTTP/1.1\r\nHost: x\r\n\r\n");
            byte[] some = new byte[1000];
            Assert.True(await connection.ReceiveAsync(some) > 0);
            connection.Reset();
        }

        using (var client = new HttpClient { Timeout = Timeouts.Step })
        {
            await AssertDownloadAsync(client, new Uri(host.BaseUri(), StaticFileFixture.NameFor(65537)), StaticFileFixture.NameFor(65537));
        }

        if (transport == TransportKind.IoUring)
        {
            // The large file is never cached: every one of these was reset with a splice in flight or due.
            Assert.Equal(5, Stats(host)!.ZeroCopySends);
        }

        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
        await AssertNoLivePipesAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_Head_HeadersOnly(TransportKind transport)
    {
        string name = StaticFileFixture.NameFor(64 * 1024 + 1);
        await using TestHost host = await StartAsync(transport);
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            await connection.SendAsync($"HEAD /{name} HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.Equal("HTTP/1.1 200 OK", await connection.ReadLineAsync());
            string? contentLength = null;
            string? line;
            while (!string.IsNullOrEmpty(line = await connection.ReadLineAsync()))
            {
                if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
                {
                    contentLength = line["Content-Length:".Length..].Trim();
                }
            }

            Assert.Equal((64 * 1024 + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), contentLength);

            // No body followed: the next response on the connection starts right here.
            await connection.SendAsync($"GET /{StaticFileFixture.NameFor(1)} HTTP/1.1\r\nHost: x\r\n\r\n");
            RawResponse next = await connection.ReadResponseAsync();
            Assert.Equal(200, next.StatusCode);
            Assert.Equal(files.Read(StaticFileFixture.NameFor(1)), next.Body);
        }

        await host.StopAndVerifyAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFiles_ResponseCompression_DecompressesToExactFile(TransportKind transport)
    {
        var options = new TestHostOptions
        {
            Output = output,
            ConfigureBuilder = builder => builder.Services.AddResponseCompression(o => o.MimeTypes = ["application/octet-stream"]),
        };
        await using TestHost host = await StartAsync(transport, app => app.UseResponseCompression(), options);
        long ringSendsBefore = Stats(host)?.RingSends ?? 0;
        using (var client = new HttpClient(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.None }) { Timeout = Timeouts.Bulk })
        {
            foreach (long size in new long[] { 4097, 1024 * 1024 })
            {
                string name = StaticFileFixture.NameFor(size);
                using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(host.BaseUri(), name));
                request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("gzip"));
                using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Timeouts.Step);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.Equal("gzip", Assert.Single(response.Content.Headers.ContentEncoding));
                await using Stream compressed = await response.Content.ReadAsStreamAsync();
                await using var gzip = new GZipStream(compressed, CompressionMode.Decompress);
                var decompressed = new MemoryStream();
                await gzip.CopyToAsync(decompressed).WaitAsync(Timeouts.Step);
                Assert.Equal(files.Read(name), decompressed.ToArray());
            }
        }

        // Compressing, ResponseCompression sends the file itself: the ring sender is not involved.
        Assert.Equal(ringSendsBefore, Stats(host)?.RingSends ?? 0);
        await host.StopAndVerifyAsync();
    }

    [SkippableFact]
    public async Task RingFileSender_IoUring_ReadsThroughRingThenServesFromCache()
    {
        string name = files.Create("cached.bin", 5000, seed: 6);
        await files.WaitUntilCacheableAsync(name);
        var options = new TestHostOptions
        {
            Output = output,
            ConfigureBuilder = builder => builder.Services.Configure<IoUringTransportOptions>(o => o.UseZeroCopyFileSend = false),
        };
        await using TestHost host = await StartAsync(TransportKind.IoUring, options: options);
        FileSenderStats stats = Stats(host) ?? throw new InvalidOperationException("UseIoUring registers the ring file sender.");
        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            await AssertDownloadAsync(client, new Uri(host.BaseUri(), StaticFileFixture.NameFor(1024 * 1024)), StaticFileFixture.NameFor(1024 * 1024));
            Assert.Equal(1, stats.RingSends);
            Assert.Equal(16, stats.RingReads);

            await AssertDownloadAsync(client, new Uri(host.BaseUri(), name), name);
            Assert.Equal(2, stats.RingSends);
            Assert.Equal(17, stats.RingReads);
            Assert.Equal(0, stats.CacheHits);

            await AssertDownloadAsync(client, new Uri(host.BaseUri(), name), name);
            await AssertDownloadAsync(client, new Uri(host.BaseUri(), name), name);
            Assert.Equal(2, stats.CacheHits);
            Assert.Equal(17, stats.RingReads);
        }

        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RingFileSender_InlineScheduling_ByteExact(bool zeroCopy)
    {
        var options = new TestHostOptions
        {
            Output = output,
            ConfigureBuilder = builder => builder.Services.Configure<IoUringTransportOptions>(o =>
            {
                o.UnsafePreferInlineScheduling = true;
                o.UseZeroCopyFileSend = zeroCopy;
                o.FileCacheMaxBytes = 0; // every send reads or splices, whatever the files' age
            }),
        };
        await using TestHost host = await StartAsync(TransportKind.IoUring, options: options);
        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            foreach (long size in StaticFileFixture.Sizes)
            {
                await AssertDownloadAsync(client, new Uri(host.BaseUri(), StaticFileFixture.NameFor(size)), StaticFileFixture.NameFor(size));
            }
        }

        FileSenderStats stats = Stats(host)!;
        Assert.True(zeroCopy ? stats.ZeroCopySends > 0 && stats.RingReads == 0 : stats.RingReads > 0 && stats.ZeroCopySends == 0);
        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
    }

    [SkippableFact]
    public async Task RingFileSender_SocketsFallback_NotUsedAndBytesExact()
    {
        var options = new TestHostOptions
        {
            Output = output,
            // The sender installed (UseIoUring), but io_uring forced off: Sockets serves every connection.
            ConfigureBuilder = builder => builder.WebHost.UseIoUring(o => o.ForceSockets = true),
            ExpectedLog = r => r.Category.StartsWith("Kestrel.Transport.IoUring", StringComparison.Ordinal),
        };
        await using TestHost host = await StartAsync(TransportKind.Sockets, options: options);
        FileSenderStats stats = Stats(host) ?? throw new InvalidOperationException("UseIoUring registers the ring file sender.");
        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            foreach (long size in new long[] { 4097, 1024 * 1024 })
            {
                await AssertDownloadAsync(client, new Uri(host.BaseUri(), StaticFileFixture.NameFor(size)), StaticFileFixture.NameFor(size));
            }
        }

        Assert.Equal(0, stats.RingSends + stats.RingReads + stats.CacheHits + stats.Fallbacks);
        await host.StopAndVerifyAsync();
    }

    [SkippableFact]
    public async Task RingFileSender_Disabled_NotUsed()
    {
        var options = new TestHostOptions
        {
            Output = output,
            ConfigureBuilder = builder => builder.Services.Configure<IoUringTransportOptions>(o => o.UseRingFileSender = false),
        };
        await using TestHost host = await StartAsync(TransportKind.IoUring, options: options);
        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            await AssertDownloadAsync(client, new Uri(host.BaseUri(), StaticFileFixture.NameFor(65537)), StaticFileFixture.NameFor(65537));
        }

        FileSenderStats stats = Stats(host)!;
        Assert.Equal(0, stats.RingSends + stats.RingReads + stats.CacheHits + stats.Fallbacks);
        await host.StopAndVerifyAsync();
    }

    /// <summary>The file cache off, so that every send of a regular file is a candidate for the zero-copy path.</summary>
    private TestHostOptions ZeroCopyOptions(bool zeroCopy = true, Action<ListenOptions>? listen = null, Action<WebApplicationBuilder>? builder = null) => new()
    {
        Output = output,
        ConfigureListen = listen,
        ConfigureBuilder = b =>
        {
            b.Services.Configure<IoUringTransportOptions>(o =>
            {
                o.FileCacheMaxBytes = 0;
                o.UseZeroCopyFileSend = zeroCopy;
            });
            builder?.Invoke(b);
        },
    };

    /// <summary>Waits (bounded) until every splice pipe has been closed (the pool is disposed with the transport).</summary>
    private static async Task AssertNoLivePipesAsync()
    {
        DateTime deadline = DateTime.UtcNow + Timeouts.Settle;
        while (SplicePipePool.LivePipes != 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        Assert.Equal(0, SplicePipePool.LivePipes);
    }

    [SkippableFact]
    public async Task ZeroCopy_CleartextHttp11ContentLength_UsedForEverySizeAndByteExact()
    {
        string large = files.Large;
        await using TestHost host = await StartAsync(TransportKind.IoUring, options: ZeroCopyOptions());
        FileSenderStats stats = Stats(host)!;
        using (var client = new HttpClient { Timeout = Timeouts.Bulk })
        {
            foreach (long size in StaticFileFixture.Sizes)
            {
                string name = StaticFileFixture.NameFor(size);
                long before = stats.ZeroCopySends;
                await AssertDownloadAsync(client, new Uri(host.BaseUri(), name), name);
                await AssertDownloadAsync(client, new Uri(host.BaseUri(), "result/" + name), name);

                // An empty body has nothing to send at all.
                Assert.Equal(size == 0 ? before : before + 2, stats.ZeroCopySends);
            }

            long beforeLarge = stats.ZeroCopySends;
            await AssertDownloadAsync(client, new Uri(host.BaseUri(), large), large);
            Assert.Equal(beforeLarge + 1, stats.ZeroCopySends);
        }

        Assert.Equal(0, stats.RingSends + stats.RingReads + stats.ZeroCopyUnavailable);
        await host.StopAndVerifyAsync();
        await AssertNoLiveReadersAsync();
        await AssertNoLivePipesAsync();
    }

    [SkippableFact]
    public async Task ZeroCopy_RangesOffsetsAndKeepAlive_ExactBytes()
    {
        string name = StaticFileFixture.NameFor(1024 * 1024);
        byte[] content = files.Read(name);
        await using TestHost host = await StartAsync(TransportKind.IoUring, options: ZeroCopyOptions());
        FileSenderStats stats = Stats(host)!;
        await using (RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint))
        {
            // Ranges through StaticFiles, offsets and counts through SendFileAsync, and an ordinary
            // response between them, all pipelined on one keep-alive connection: each region must go
            // out exactly between the bytes written before and after it.
            (long From, long To)[] ranges = [(0, 0), (1, 4096), (4095, 4096), (65535, 65537), (123457, 987653), (1024 * 1024 - 1, 1024 * 1024 - 1)];
            var requests = new System.Text.StringBuilder();
            foreach ((long from, long to) in ranges)
            {
                requests.Append($"GET /{name} HTTP/1.1\r\nHost: x\r\nRange: bytes={from}-{to}\r\n\r\n");
                requests.Append($"GET /send/{name}?offset={from}&count={to - from + 1} HTTP/1.1\r\nHost: x\r\n\r\n");
                requests.Append($"GET /no-such-file HTTP/1.1\r\nHost: x\r\n\r\n");
            }

            await connection.SendAsync(requests.ToString());
            foreach ((long from, long to) in ranges)
            {
                byte[] expected = content.AsSpan((int)from, (int)(to - from + 1)).ToArray();
                RawResponse range = await connection.ReadResponseAsync();
                Assert.Equal(206, range.StatusCode);
                Assert.Equal(expected, range.Body);
                RawResponse sent = await connection.ReadResponseAsync();
                Assert.Equal(200, sent.StatusCode);
                Assert.Equal(expected, sent.Body);
                RawResponse notFound = await connection.ReadResponseAsync();
                Assert.Equal(404, notFound.StatusCode);
            }
        }

        Assert.Equal(12, stats.ZeroCopySends);
        Assert.Equal(0, stats.RingSends);
        await host.StopAndVerifyAsync();
        await AssertNoLivePipesAsync();
    }

    /// <summary>A connection middleware that puts its own pipe between Kestrel and the transport.</summary>
    private sealed class WrappedTransport(System.IO.Pipelines.IDuplexPipe inner) : System.IO.Pipelines.IDuplexPipe
    {
        public System.IO.Pipelines.PipeReader Input => inner.Input;

        public System.IO.Pipelines.PipeWriter Output => inner.Output;
    }

    public static TheoryData<string> GateCases => ["chunked", "head", "http10", "option-off", "connection-middleware", "tls-http11", "tls-http2", "compression"];

    [SkippableTheory]
    [MemberData(nameof(GateCases))]
    public async Task ZeroCopy_GateDoesNotHold_NotUsedAndBytesExact(string gate)
    {
        string name = StaticFileFixture.NameFor(64 * 1024 + 1);
        byte[] content = files.Read(name);
        bool tls = gate.StartsWith("tls", StringComparison.Ordinal);
        TestHostOptions options = ZeroCopyOptions(
            zeroCopy: gate != "option-off",
            listen: listen =>
            {
                if (gate == "connection-middleware")
                {
                    listen.Use(next => context =>
                    {
                        context.Transport = new WrappedTransport(context.Transport);
                        return next(context);
                    });
                }

                if (tls)
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    listen.UseHttps(new HttpsConnectionAdapterOptions { ServerCertificate = TestCertificate.Certificate });
                }
            },
            builder: gate == "compression" ? b => b.Services.AddResponseCompression(o => o.MimeTypes = ["application/octet-stream"]) : null);
        await using TestHost host = await StartAsync(TransportKind.IoUring, gate == "compression" ? app => app.UseResponseCompression() : null, options);
        FileSenderStats stats = Stats(host)!;
        if (tls)
        {
            using var client = new HttpClient(TestCertificate.CreateTrustingHandler()) { Timeout = Timeouts.Bulk };
            await AssertDownloadAsync(client, new Uri(host.BaseUri(https: true), name), name, gate == "tls-http2" ? HttpVersion.Version20 : HttpVersion.Version11);
        }
        else if (gate == "compression")
        {
            using var client = new HttpClient(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.GZip }) { Timeout = Timeouts.Bulk };
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(host.BaseUri(), name));
            request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("gzip"));
            using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Timeouts.Step);
            Assert.Equal(content, await response.Content.ReadAsByteArrayAsync().WaitAsync(Timeouts.Step));
        }
        else
        {
            await using RawConnection connection = await RawConnection.ConnectAsync(host.EndPoint);
            string request = gate switch
            {
                "chunked" => $"GET /send/{name}?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                "head" => $"HEAD /send/{name} HTTP/1.1\r\nHost: x\r\n\r\n",
                "http10" => $"GET /{name} HTTP/1.0\r\nHost: x\r\n\r\n",
                _ => $"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n",
            };
            await connection.SendAsync(request);
            if (gate == "head")
            {
                Assert.Equal("HTTP/1.1 200 OK", await connection.ReadLineAsync());
                while (!string.IsNullOrEmpty(await connection.ReadLineAsync()))
                {
                }

                // No body: the next response starts right here.
                await connection.SendAsync($"GET /no-such-file HTTP/1.1\r\nHost: x\r\n\r\n");
                Assert.Equal(404, (await connection.ReadResponseAsync()).StatusCode);
            }
            else
            {
                RawResponse response = await connection.ReadResponseAsync();
                Assert.Equal(200, response.StatusCode);
                Assert.Equal(content, response.Body);
            }
        }

        Assert.Equal(0, stats.ZeroCopySends);
        await host.StopAndVerifyAsync();
        await AssertNoLivePipesAsync();
    }

    [SkippableFact]
    public async Task ZeroCopy_ConnectionsBeyondPipePoolAndSoftLimit_ByteExact()
    {
        // More concurrent regions than the pool keeps idle, on several reactors, each holding a pipe.
        await using TestHost host = await StartAsync(TransportKind.IoUring, options: ZeroCopyOptions());
        FileSenderStats stats = Stats(host)!;
        string name = StaticFileFixture.NameFor(1024 * 1024);
        using (var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 96 }) { Timeout = Timeouts.Bulk })
        {
            await Task.WhenAll(Enumerable.Range(0, 192).Select(_ => AssertDownloadAsync(client, new Uri(host.BaseUri(), name), name))).WaitAsync(Timeouts.Bulk);
        }

        Assert.Equal(192, stats.ZeroCopySends + stats.ZeroCopyUnavailable);
        Assert.True(stats.ZeroCopySends > 0);
        await host.StopAndVerifyAsync();
        await AssertNoLivePipesAsync();
    }

    [SkippableTheory, AllTransports]
    public async Task StaticFilesSample_ServesRoot_ByteExact(TransportKind transport)
    {
        transport.EnsureAvailable();
        string name = StaticFileFixture.NameFor(64 * 1024 + 1);
        await using SampleProcess sample = SampleProcess.Start("StaticFiles", ["--transport", transport == TransportKind.IoUring ? "iouring" : "sockets", "--root", files.Root, "--urls", "http://127.0.0.1:0"]);
        Uri baseUri = await sample.WaitForListeningAsync();
        using (var client = new HttpClient { Timeout = Timeouts.Step })
        {
            await AssertDownloadAsync(client, new Uri(baseUri, name), name);
        }

        Assert.Equal(0, await sample.StopAsync());
    }

    [Fact]
    public async Task StaticFilesSample_UnknownArgument_PrintsUsageAndExits2()
    {
        await using SampleProcess sample = SampleProcess.Start("StaticFiles", ["--bogus"]);
        Assert.Equal(2, await sample.WaitForExitAsync());
        Assert.Contains("Usage: StaticFiles", sample.Output, StringComparison.Ordinal);
    }
}
