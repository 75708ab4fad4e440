public enum Gateway {}
