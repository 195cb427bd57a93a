/* Unbounded recursion in C: a stack overflow for the crash-trigger tests (built with -O0). */
int overflow_forever(int depth)
{
    volatile char frame[512];
    frame[0] = (char)depth;
    return overflow_forever(depth + 1) + frame[0];
}
