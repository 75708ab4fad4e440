/// SMTP AUTH mechanisms (RFC 4954) as a pure exchange: challenges out, client responses in, until the
/// credentials are complete. The exchange never sees a backend; it hands `Credentials` to the driver.
public enum SASLMechanism: String, CaseIterable, Sendable {
    /// RFC 4616: one message, `authzid NUL authcid NUL passwd`.
    case plain = "PLAIN"
    /// The de facto LOGIN mechanism: user name and password in two steps.
    case login = "LOGIN"
}

/// What a client proved it knows. `authorizationID` is empty unless the client asked to act as
/// someone else (RFC 4616 2); the authenticator refuses anything but itself.
public struct Credentials: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public let mechanism: SASLMechanism
    public let authorizationID: String
    public let user: String
    public let password: String

    public init(mechanism: SASLMechanism, authorizationID: String = "", user: String, password: String) {
        self.mechanism = mechanism; self.authorizationID = authorizationID; self.user = user; self.password = password
    }

    /// Never prints the password, whatever logs, prints or dumps it.
    public var description: String { "\(mechanism.rawValue) user=\(user)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["mechanism": mechanism, "user": user], displayStyle: .struct) }
}

/// One AUTH exchange. `start` takes the mechanism's initial response (if the client sent one);
/// `respond` takes each following line. Each step returns the next challenge, the credentials, or why
/// the exchange failed.
public struct SASLExchange: Sendable {
    public enum Step: Sendable, Equatable {
        /// Send `334 <base64 challenge>` and wait for a line.
        case challenge([UInt8])
        case done(Credentials)
        case failed(Failure)
    }

    public enum Failure: Sendable, Equatable {
        /// The client sent `*` (RFC 4954 4): 501 5.0.0.
        case cancelled
        /// Not base64, or not the mechanism's message shape: 501 5.5.2.
        case malformed(String)
    }

    let mechanism: SASLMechanism
    var user: String?

    /// RFC 4954 4: a line of a single `=` is an empty initial response.
    public static func start(_ mechanism: SASLMechanism, initialResponse: [UInt8]?) -> (SASLExchange, Step) {
        var exchange = SASLExchange(mechanism: mechanism)
        guard let initial = initialResponse else {
            switch mechanism {
            case .plain: return (exchange, .challenge([]))
            case .login: return (exchange, .challenge(Array("Username:".utf8)))
            }
        }
        let step = exchange.respond(initial)
        return (exchange, step)
    }

    public mutating func respond(_ line: [UInt8]) -> Step {
        if line == [UInt8(ascii: "*")] { return .failed(.cancelled) }
        let decoded: [UInt8]
        if line == [UInt8(ascii: "=")] {
            decoded = []
        } else {
            guard let d = Base64.decode(line[...]) else { return .failed(.malformed("response is not base64")) }
            decoded = d
        }
        switch mechanism {
        case .plain:
            return Self.plain(decoded)
        case .login:
            guard let text = String(validating: decoded, as: UTF8.self), !text.utf8.contains(0) else {
                return .failed(.malformed("LOGIN response is not UTF-8 text"))
            }
            guard let u = user else {
                user = text
                return .challenge(Array("Password:".utf8))
            }
            return .done(Credentials(mechanism: .login, user: u, password: text))
        }
    }

    /// RFC 4616 2: `[authzid] NUL authcid NUL passwd`, each UTF-8 without NUL.
    static func plain(_ message: [UInt8]) -> Step {
        let parts = message.split(separator: 0, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failed(.malformed("PLAIN message does not have three parts")) }
        guard let authz = String(validating: parts[0], as: UTF8.self),
              let user = String(validating: parts[1], as: UTF8.self),
              let password = String(validating: parts[2], as: UTF8.self) else {
            return .failed(.malformed("PLAIN message is not UTF-8"))
        }
        return .done(Credentials(mechanism: .plain, authorizationID: authz, user: user, password: password))
    }
}

/// RFC 4648 base64, strict: the standard alphabet, `=` padding only at the end, length a multiple of 4.
public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let values: [Int8] = {
        var v = [Int8](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { v[Int(c)] = Int8(i) }
        return v
    }()

    public static func decode(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        guard text.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        var i = text.startIndex
        while i < text.endIndex {
            let quad = text[i..<i + 4]
            let last = i + 4 == text.endIndex
            let pad = quad.reversed().prefix { $0 == UInt8(ascii: "=") }.count
            guard pad <= 2, pad == 0 || last else { return nil }
            var n: UInt32 = 0
            for (k, c) in quad.enumerated() {
                if k >= 4 - pad { n <<= 6; continue }
                let v = values[Int(c)]
                guard v >= 0 else { return nil }
                n = n << 6 | UInt32(v)
            }
            out.append(UInt8(n >> 16 & 0xff))
            if pad < 2 { out.append(UInt8(n >> 8 & 0xff)) }
            if pad < 1 { out.append(UInt8(n & 0xff)) }
            i += 4
        }
        return out
    }

    public static func encode(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i])
            let b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            let b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let n = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(i + 1 < bytes.count ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(n & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return out
    }
}
