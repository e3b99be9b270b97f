"""What a weight sync ships (`wire`) and the collective broadcast (`collective`); the one
sync interface the trainer calls is `actors.weight_sync`."""
