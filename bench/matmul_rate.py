"""The machine's limit for the benches: float32 matrix product rate."""
import time


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 FLOP/s of a size^3 matrix product in graph mode."""
    import tensorflow.compat.v1 as tf  # the training bench's workers import this file too
    with tf.Graph().as_default():
        a = tf.Variable(tf.random.normal([size, size]))
        b = tf.Variable(tf.random.normal([size, size]))
        product = tf.reduce_sum(tf.matmul(a, b))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(product)
            start = time.perf_counter()
            for _ in range(repeats):
                sess.run(product)
            elapsed = time.perf_counter() - start
    return 2.0 * size ** 3 * repeats / elapsed
