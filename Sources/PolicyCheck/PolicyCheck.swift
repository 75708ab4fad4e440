/// PolicyCheck: `relaygate explain` and `relaygate test` as library code: reading facts and case files,
/// running the engine the server runs, and rendering decisions as text or JSON. Pure but for the
/// file reads that the parser performs through its `SourceReader`.
public enum PolicyCheck {}
