using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Transport.Internal;

/// <summary>
/// The transport's log messages. Connection event ids and levels mirror Kestrel's Sockets transport
/// (4 pause, 5 resume, 6 read FIN, 7 write FIN, 8 write RST, 14 error, 19 reset) so that tooling keyed
/// on them works unchanged; ids are never reused.
/// </summary>
internal static partial class IoUringLog
{
    public const string Category = "Kestrel.Transport.IoUring";

    [LoggerMessage(4, LogLevel.Debug, @"Connection id ""{ConnectionId}"" paused.", EventName = "ConnectionPause", SkipEnabledCheck = true)]
    public static partial void ConnectionPause(ILogger logger, string connectionId);

    [LoggerMessage(5, LogLevel.Debug, @"Connection id ""{ConnectionId}"" resumed.", EventName = "ConnectionResume", SkipEnabledCheck = true)]
    public static partial void ConnectionResume(ILogger logger, string connectionId);

    [LoggerMessage(6, LogLevel.Debug, @"Connection id ""{ConnectionId}"" received FIN.", EventName = "ConnectionReadFin", SkipEnabledCheck = true)]
    public static partial void ConnectionReadFin(ILogger logger, string connectionId);

    [LoggerMessage(7, LogLevel.Debug, @"Connection id ""{ConnectionId}"" sending FIN because: ""{Reason}""", EventName = "ConnectionWriteFin", SkipEnabledCheck = true)]
    public static partial void ConnectionWriteFin(ILogger logger, string connectionId, string reason);

    [LoggerMessage(8, LogLevel.Debug, @"Connection id ""{ConnectionId}"" sending RST because: ""{Reason}""", EventName = "ConnectionWriteRst", SkipEnabledCheck = true)]
    public static partial void ConnectionWriteRst(ILogger logger, string connectionId, string reason);

    [LoggerMessage(14, LogLevel.Debug, @"Connection id ""{ConnectionId}"" communication error.", EventName = "ConnectionError", SkipEnabledCheck = true)]
    public static partial void ConnectionError(ILogger logger, string connectionId, Exception ex);

    [LoggerMessage(19, LogLevel.Debug, @"Connection id ""{ConnectionId}"" reset.", EventName = "ConnectionReset", SkipEnabledCheck = true)]
    public static partial void ConnectionReset(ILogger logger, string connectionId);

    [LoggerMessage(100, LogLevel.Information, "Kestrel is serving with the io_uring transport: {ReactorCount} reactor(s), {Features}.", EventName = "TransportStarted")]
    public static partial void TransportStarted(ILogger logger, int reactorCount, string features);

    [LoggerMessage(101, LogLevel.Warning, "io_uring is unavailable, so Kestrel is serving with the Sockets transport instead: {Reason}", EventName = "FallingBackToSockets")]
    public static partial void FallingBackToSockets(ILogger logger, string reason);

    [LoggerMessage(102, LogLevel.Information, "IoUringTransportOptions.ForceSockets is set, so Kestrel is serving with the Sockets transport.", EventName = "ForcedSockets")]
    public static partial void ForcedSockets(ILogger logger);

    [LoggerMessage(103, LogLevel.Warning, "Accepting on {EndPoint} failed with {Error}: the process is out of file descriptors. Existing connections keep being served; accepting resumes in {DelayMs} ms. Raise the limit (ulimit -n, LimitNOFILE=) if this persists.", EventName = "AcceptBackoff")]
    public static partial void AcceptBackoff(ILogger logger, string endPoint, string error, int delayMs);

    [LoggerMessage(104, LogLevel.Debug, "Accepting on {EndPoint} failed transiently with {Error}; retrying.", EventName = "AcceptRetry")]
    public static partial void AcceptRetry(ILogger logger, string endPoint, string error);

    [LoggerMessage(105, LogLevel.Error, "An io_uring reactor caught an unexpected exception; it ended only the work that threw.", EventName = "ReactorException")]
    public static partial void ReactorException(ILogger logger, Exception ex);
}
