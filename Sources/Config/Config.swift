public enum Config {}
