public enum PolicyLanguage {}
