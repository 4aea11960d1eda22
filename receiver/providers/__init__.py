"""One pure module per provider: headers + raw bytes (+ the clock) in, a TaskEvent or one error out."""
