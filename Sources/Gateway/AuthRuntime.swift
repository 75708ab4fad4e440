import Auth
import Synchronization
import Transport

/// What outlives a reload for authentication: the threads that run PAM and LDAP calls, and the
/// failure counts of the brute-force throttle.
public final class AuthRuntime: Sendable {
    /// PAM and libldap block; they run here, never on an event loop or the cooperative pool.
    public let pool: BlockingPool
    let throttle: Mutex<FailureThrottle>

    public init(threads: Int = 8, throttle settings: FailureThrottle.Settings) {
        pool = BlockingPool(threads: threads, name: "relaygate-auth")
        throttle = Mutex(FailureThrottle(settings: settings))
    }
}
