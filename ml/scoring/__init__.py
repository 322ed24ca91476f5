"""Batch scoring: the champion scores feature partitions shard by shard, published once per partition."""
