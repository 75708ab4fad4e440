/// When to try a deferred message again: first after `first`, then doubling up to `maximum` apart,
/// until `lifetime` after arrival (Postfix's defaults: 5 min, 1 hour, 5 days). Pure.
public struct RetrySchedule: Sendable, Hashable {
    public var first: Duration
    public var maximum: Duration
    public var lifetime: Duration

    public init(first: Duration = .seconds(300), maximum: Duration = .seconds(3600), lifetime: Duration = .seconds(5 * 86400)) {
        self.first = first; self.maximum = maximum; self.lifetime = lifetime
    }

    /// The delay after the `attempts`-th failed attempt (1 for the first failure).
    public func delay(afterAttempts attempts: Int) -> Duration {
        var d = first
        var n = 1
        while n < attempts && d < maximum { d = d * 2; n += 1 }
        return min(d, maximum)
    }

    /// True when a message that arrived at `received` has been queued for too long at `now`.
    public func expired(received: Double, now: Double) -> Bool {
        now - received >= Double(lifetime.components.seconds)
    }
}
