public enum Queue {}
