public enum Transport {}
