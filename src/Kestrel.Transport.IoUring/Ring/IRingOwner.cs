namespace Kestrel.Transport.IoUring.Ring;

/// <summary>
/// Something that issues operations on a reactor's ring and receives their completions: a listener,
/// a connection, a test. It holds a slot in the reactor's owner table from <see cref="Reactor.Register"/>
/// until <see cref="Reactor.Unregister"/>, which it may call only after the final completion (the one
/// without IORING_CQE_F_MORE) of every operation it issued. All calls arrive on the reactor thread.
/// </summary>
internal interface IRingOwner
{
    /// <summary>One completion of an operation this owner issued with <paramref name="kind"/>.</summary>
    void OnCompletion(byte kind, int result, uint flags);

    /// <summary>
    /// <see cref="OnCompletion"/> threw. The owner must end its own work (abort the connection); the
    /// reactor and every other owner go on.
    /// </summary>
    void OnHandlerException(Exception exception);

    /// <summary>The reactor is stopping: stop issuing new operations. In-flight ones will be cancelled.</summary>
    void OnReactorStopping();
}
