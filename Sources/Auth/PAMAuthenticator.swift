import CPAM
import Glibc
import MailModel

/// PAM: a named service, read from `confdir` (pam_start_confdir) or /etc/pam.d. PAM's own failure
/// delay is taken over (PAM_FAIL_DELAY), so no thread sleeps; the gateway delays every failure the
/// same on a timer. One PAM handle per attempt: handles are not shared between threads.
public struct PAMAuthenticator: Authenticator {
    public struct Settings: Sendable, Hashable {
        public var service: String
        /// nil: /etc/pam.d.
        public var confdir: String?
        public init(service: String, confdir: String? = nil) { self.service = service; self.confdir = confdir }

        /// The service file PAM will read. A missing one must stop the configuration: plain pam_start
        /// falls back to /etc/pam.d/other without a word.
        public var serviceFile: String { "\(confdir ?? "/etc/pam.d")/\(service)" }
    }

    public let name: String
    public let settings: Settings

    public init(name: String, settings: Settings) { self.name = name; self.settings = settings }

    public func authenticate(user: String, password: String, client: IPAddress) -> AuthOutcome {
        guard access(settings.serviceFile, R_OK) == 0 else {
            return .unavailable(reason: "PAM service file \(settings.serviceFile) is not readable")
        }
        var stage: Int32 = 0
        let rc: Int32 = settings.confdir.withOptionalCString { dir in
            rg_pam_check(settings.service, dir, user, password, client.description, &stage)
        }
        let text = String(cString: rg_pam_strerror(rc))
        switch (stage, rc) {
        case (2, PAM_SUCCESS):
            return .accepted(addresses: [])
        case (_, PAM_AUTH_ERR), (_, PAM_USER_UNKNOWN), (_, PAM_CRED_INSUFFICIENT), (_, PAM_MAXTRIES),
             (_, PAM_PERM_DENIED), (_, PAM_ACCT_EXPIRED), (_, PAM_NEW_AUTHTOK_REQD), (_, PAM_AUTHTOK_EXPIRED):
            return .rejected(reason: "pam \(stage == 2 ? "account" : "auth"): \(text)")
        default:
            // Temporary unless known permanent: a broken module or unavailable source defers.
            return .unavailable(reason: "pam \(["start", "auth", "account"][Int(stage)]): \(text) (\(rc))")
        }
    }
}

extension Optional where Wrapped == String {
    func withOptionalCString<R>(_ body: (UnsafePointer<CChar>?) -> R) -> R {
        switch self {
        case .some(let s): return s.withCString { body($0) }
        case .none: return body(nil)
        }
    }
}
