"""Source adapters: plugins that read a department's data, registered under the `cx.adapters` entry point."""
