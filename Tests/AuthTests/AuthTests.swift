import MailModel
import SMTPProtocol
import Testing
@testable import Auth

/// A backend with fixed answers, to test the chain's order and its rules without PAM or LDAP.
struct FixedBackend: Authenticator {
    let name: String
    let answers: [String: AuthOutcome]
    let calls = CallCounter()
    func authenticate(user: String, password: String, client: IPAddress) -> AuthOutcome {
        calls.count += 1
        return answers[user + ":" + password] ?? answers[user] ?? .rejected(reason: "unknown")
    }
}

final class CallCounter: @unchecked Sendable { var count = 0 }

let client = IPAddress("192.0.2.7")!

@Suite struct AuthChainTests {
    @Test func emptyPasswordAndForeignAuthorizationNeverReachABackend() {
        let b = FixedBackend(name: "b", answers: ["alice": .accepted(addresses: [])])
        let chain = AuthChain([b])
        #expect(chain.authenticate(Credentials(mechanism: .plain, user: "alice", password: ""), client: client).0
            == .rejected(reason: "empty password"))
        let (o, backend) = chain.authenticate(Credentials(mechanism: .plain, authorizationID: "root", user: "alice", password: "x"), client: client)
        #expect(o == .rejected(reason: "authorization identity differs from the user") && backend == nil)
        #expect(b.calls.count == 0)
        #expect(chain.authenticate(Credentials(mechanism: .plain, authorizationID: "alice", user: "alice", password: "x"), client: client).0
            == .accepted(addresses: []))
    }

    @Test func backendsInOrderAndUnavailableWinsOverRejected() {
        let pam = FixedBackend(name: "pam", answers: ["alice:p1": .accepted(addresses: [])])
        let ldap = FixedBackend(name: "ldap", answers: ["bob:p2": .accepted(addresses: ["bob@example.org"]), "down": .unavailable(reason: "x")])
        let chain = AuthChain([pam, ldap])
        #expect(chain.authenticate(Credentials(mechanism: .plain, user: "alice", password: "p1"), client: client).backend == "pam")
        #expect(ldap.calls.count == 0)
        let (o, b) = chain.authenticate(Credentials(mechanism: .login, user: "bob", password: "p2"), client: client)
        #expect(o == .accepted(addresses: ["bob@example.org"]) && b == "ldap")
        #expect(chain.authenticate(Credentials(mechanism: .plain, user: "down", password: "x"), client: client).0 == .unavailable(reason: "x"))
        if case .rejected = chain.authenticate(Credentials(mechanism: .plain, user: "carol", password: "x"), client: client).0 {} else {
            Issue.record("an unknown user in every backend is rejected")
        }
    }
}

@Suite struct FailureThrottleTests {
    var settings: FailureThrottle.Settings {
        var s = FailureThrottle.Settings()
        s.clientLimit = 3; s.userLimit = 5; s.window = .seconds(60); s.coolOff = .seconds(600)
        return s
    }
    let sec: UInt64 = 1_000_000_000

    @Test func clientLimitWithinTheWindowCoolsOff() {
        var t = FailureThrottle(settings: settings)
        let r1 = t.recordFailure(client: client, user: "a", now: 0)
        #expect(!r1)
        let r2 = t.recordFailure(client: client, user: "b", now: 10 * sec)
        #expect(!r2)
        let r3 = t.recordFailure(client: client, user: "c", now: 20 * sec)
        #expect(r3)
        #expect(t.isBlocked(client: client, user: nil, now: 21 * sec))
        #expect(t.isBlocked(client: client, user: nil, now: 619 * sec))
        #expect(!t.isBlocked(client: client, user: nil, now: 621 * sec))
        // Another client is not affected.
        #expect(!t.isBlocked(client: IPAddress("192.0.2.8")!, user: "x", now: 21 * sec))
    }

    @Test func failuresOutsideTheWindowDoNotCount() {
        var t = FailureThrottle(settings: settings)
        _ = t.recordFailure(client: client, user: "a", now: 0)
        _ = t.recordFailure(client: client, user: "a", now: 30 * sec)
        let r4 = t.recordFailure(client: client, user: "a", now: 70 * sec)
        #expect(!r4)   // the first has expired
        #expect(!t.isBlocked(client: client, user: "a", now: 71 * sec))
    }

    @Test func userLimitAcrossClientsAndSuccessForgetsTheClient() {
        var t = FailureThrottle(settings: settings)
        for i in 0..<4 {
            let crossed = t.recordFailure(client: IPAddress("198.51.100.\(i)")!, user: "Alice", now: UInt64(i) * sec)
            #expect(!crossed)
        }
        let crossed = t.recordFailure(client: IPAddress("198.51.100.9")!, user: "alice", now: 5 * sec)
        #expect(crossed)
        #expect(t.isBlocked(client: IPAddress("203.0.113.1")!, user: "ALICE", now: 6 * sec))
        var u = FailureThrottle(settings: settings)
        _ = u.recordFailure(client: client, user: "a", now: 0)
        _ = u.recordFailure(client: client, user: "b", now: 0)
        u.recordSuccess(client: client)
        let r5 = u.recordFailure(client: client, user: "c", now: 0)
        #expect(!r5)
    }

    @Test func memoryIsBounded() {
        var t = FailureThrottle(settings: settings)
        for i in 0..<(FailureThrottle.maxTracked + 10) {
            let a = IPAddress("10.\(i >> 16 & 255).\(i >> 8 & 255).\(i & 255)")!
            _ = t.recordFailure(client: a, user: "u\(i % 7)", now: UInt64(i))
        }
        #expect(t.clients.count <= FailureThrottle.maxTracked)
    }
}

@Suite struct LDAPEscapingTests {
    @Test func dnValuesAreEscaped() {
        #expect(LDAPAuthenticator.escapeDNValue("alice") == "alice")
        #expect(LDAPAuthenticator.escapeDNValue("a,b=c+d") == "a\\,b\\=c\\+d")
        #expect(LDAPAuthenticator.escapeDNValue(" #x ") == "\\ #x\\ ")
        #expect(LDAPAuthenticator.escapeDNValue("#x") == "\\#x")
        #expect(LDAPAuthenticator.escapeDNValue("a\\b\"<>;") == "a\\\\b\\\"\\<\\>\\;")
    }

    @Test func placeholderReplacement() {
        #expect("(uid=%u)".replacingPlaceholder(with: "al\\2aice") == "(uid=al\\2aice)")
        #expect("(|(uid=%u)(mail=%u))".replacingPlaceholder(with: "x") == "(|(uid=x)(mail=x))")
        #expect("100%".replacingPlaceholder(with: "x") == "100%")
        #expect("%%u".replacingPlaceholder(with: "x") == "%x")
    }
}
